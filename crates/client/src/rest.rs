//! REST calls.

use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_protocol::rest::{
    AddMember, AuditList, AuditQuery, AuthResponse, BlockList, CreateRoom, Credentials, EditMessage,
    ErrorBody, Filters, HistoryQuery, Impose, InviteList, Invited, MarkRead, MemberList, MessageList,
    PostMessage, PresenceList, PublicRoomsQuery, ReadState, Registration, RoomList, SetRole, UserLookup,
    UserSettings,
};
use switchboard_protocol::{
    AddPolicy, AuditEntry, Invite, Message, Presence, Report, Role, Room, RoomKind, TimelineEvent, User,
};

use crate::ClientError;

/// A REST client, optionally authenticated.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    /// The same client carrying a token.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Client { token: Some(token.into()), ..self.clone() }
    }

    /// The token in use, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The WebSocket URL of this server.
    pub fn ws_url(&self) -> String {
        let rest = self.base.strip_prefix("http").unwrap_or(&self.base);
        format!("ws{rest}/v1/ws")
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return Ok(serde_json::from_slice(&bytes)?);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ClientError::Api {
                status: status.as_u16(),
                code: e.error.code,
                message: e.error.message,
                retry_after_ms: e.error.retry_after_ms,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "unknown".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
                retry_after_ms: None,
            },
        })
    }

    async fn empty(resp: Response) -> Result<(), ClientError> {
        if resp.status().is_success() {
            return Ok(());
        }
        Self::decode::<serde_json::Value>(resp).await.map(|_| ())
    }

    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Self::decode(self.request(method, path).json(body).send().await?).await
    }

    /// Registers an account; returns the user and a token.
    pub async fn register(&self, username: &str, password: &str) -> Result<AuthResponse, ClientError> {
        let body = Registration { username: username.into(), password: password.into(), invite: None };
        self.send_json(Method::POST, "/v1/users", &body).await
    }

    /// Logs in.
    pub async fn login(&self, username: &str, password: &str) -> Result<AuthResponse, ClientError> {
        let body = Credentials { username: username.into(), password: password.into() };
        self.send_json(Method::POST, "/v1/sessions", &body).await
    }

    /// The caller.
    pub async fn me(&self) -> Result<User, ClientError> {
        Self::decode(self.request(Method::GET, "/v1/users/me").send().await?).await
    }

    /// Creates a room (or returns the existing dm).
    pub async fn create_room(
        &self,
        name: &str,
        kind: RoomKind,
        members: &[&str],
    ) -> Result<Room, ClientError> {
        let body = CreateRoom {
            name: name.into(),
            kind,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        };
        self.send_json(Method::POST, "/v1/rooms", &body).await
    }

    /// The caller's rooms.
    pub async fn rooms(&self) -> Result<Vec<Room>, ClientError> {
        let list: RoomList = Self::decode(self.request(Method::GET, "/v1/rooms").send().await?).await?;
        Ok(list.rooms)
    }

    /// Public rooms by name, to find one to join.
    pub async fn public_rooms(&self, limit: u32) -> Result<Vec<Room>, ClientError> {
        let req =
            self.request(Method::GET, "/v1/rooms/public").query(&PublicRoomsQuery { limit: Some(limit) });
        let list: RoomList = Self::decode(req.send().await?).await?;
        Ok(list.rooms)
    }

    /// A user by username.
    pub async fn lookup_user(&self, username: &str) -> Result<User, ClientError> {
        let req =
            self.request(Method::GET, "/v1/users/lookup").query(&UserLookup { username: username.into() });
        Self::decode(req.send().await?).await
    }

    /// One user's presence (`404` unless the caller shares a room with them).
    pub async fn presence(&self, user: &str) -> Result<Presence, ClientError> {
        Self::decode(self.request(Method::GET, &format!("/v1/users/{user}/presence")).send().await?).await
    }

    /// Many users' presence; those the caller may not see are left out.
    pub async fn presence_of(&self, users: &[&str]) -> Result<Vec<Presence>, ClientError> {
        let req = self.request(Method::GET, "/v1/presence").query(&[("users", users.join(","))]);
        Ok(Self::decode::<PresenceList>(req.send().await?).await?.presence)
    }

    /// One room.
    pub async fn room(&self, room: &str) -> Result<Room, ClientError> {
        Self::decode(self.request(Method::GET, &format!("/v1/rooms/{room}")).send().await?).await
    }

    /// Joins a public room.
    pub async fn join(&self, room: &str) -> Result<Room, ClientError> {
        Self::decode(self.request(Method::POST, &format!("/v1/rooms/{room}/join")).send().await?).await
    }

    /// Registers with an invite token (servers whose sign-ups are invite-only).
    pub async fn register_with_invite(
        &self,
        username: &str,
        password: &str,
        invite: &str,
    ) -> Result<AuthResponse, ClientError> {
        let body = Registration {
            username: username.into(),
            password: password.into(),
            invite: Some(invite.into()),
        };
        self.send_json(Method::POST, "/v1/users", &body).await
    }

    /// Adds a member, or invites them (as their `add_policy` says): `Some` is the invite.
    pub async fn add_member(&self, room: &str, user: &str) -> Result<Option<Invite>, ClientError> {
        let body = AddMember { user_id: user.into() };
        let resp =
            self.request(Method::POST, &format!("/v1/rooms/{room}/members")).json(&body).send().await?;
        if resp.status().as_u16() == 202 {
            return Ok(Some(Self::decode::<Invited>(resp).await?.invite));
        }
        Self::empty(resp).await.map(|()| None)
    }

    /// Pending invites.
    pub async fn invites(&self) -> Result<Vec<Invite>, ClientError> {
        Ok(Self::decode::<InviteList>(self.request(Method::GET, "/v1/invites").send().await?).await?.invites)
    }

    /// Declines an invite.
    pub async fn decline_invite(&self, room: &str) -> Result<(), ClientError> {
        Self::empty(self.request(Method::DELETE, &format!("/v1/invites/{room}")).send().await?).await
    }

    /// Sets who may put this user into rooms.
    pub async fn set_add_policy(&self, add_policy: AddPolicy) -> Result<(), ClientError> {
        let _: UserSettings =
            self.send_json(Method::PUT, "/v1/me/settings", &UserSettings { add_policy }).await?;
        Ok(())
    }

    /// Blocks a user.
    pub async fn block(&self, user: &str) -> Result<(), ClientError> {
        Self::empty(self.request(Method::PUT, &format!("/v1/me/blocks/{user}")).send().await?).await
    }

    /// Lifts a block.
    pub async fn unblock(&self, user: &str) -> Result<(), ClientError> {
        Self::empty(self.request(Method::DELETE, &format!("/v1/me/blocks/{user}")).send().await?).await
    }

    /// Users this user has blocked.
    pub async fn blocks(&self) -> Result<Vec<User>, ClientError> {
        Ok(Self::decode::<BlockList>(self.request(Method::GET, "/v1/me/blocks").send().await?).await?.users)
    }

    /// Ends this token's session (signs out).
    pub async fn logout(&self) -> Result<(), ClientError> {
        Self::empty(self.request(Method::DELETE, "/v1/sessions/current").send().await?).await
    }

    /// Ends every session of this account.
    pub async fn logout_everywhere(&self) -> Result<(), ClientError> {
        Self::empty(self.request(Method::DELETE, "/v1/sessions").send().await?).await
    }

    /// Removes a member (or leaves, with one's own id).
    pub async fn remove_member(&self, room: &str, user: &str) -> Result<(), ClientError> {
        Self::empty(self.request(Method::DELETE, &format!("/v1/rooms/{room}/members/{user}")).send().await?)
            .await
    }

    /// Gives a member another role (audited with the reason).
    pub async fn set_role(
        &self,
        room: &str,
        user: &str,
        role: Role,
        reason: Option<&str>,
    ) -> Result<(), ClientError> {
        let body = SetRole { role, reason: reason.map(str::to_owned) };
        let req = self.request(Method::PUT, &format!("/v1/rooms/{room}/members/{user}/role")).json(&body);
        Self::decode::<serde_json::Value>(req.send().await?).await.map(|_| ())
    }

    /// Bans (`what` = `bans`) or mutes (`mutes`) a user, for `duration_secs` or for good.
    pub async fn sanction(
        &self,
        room: &str,
        what: &str,
        user: &str,
        duration_secs: Option<u64>,
        reason: Option<&str>,
    ) -> Result<(), ClientError> {
        let body = Impose { user_id: user.to_owned(), reason: reason.map(str::to_owned), duration_secs };
        let req = self.request(Method::POST, &format!("/v1/rooms/{room}/{what}")).json(&body);
        Self::empty(req.send().await?).await
    }

    /// Sets the room's slow mode (seconds between one member's messages; 0 turns it off).
    pub async fn set_slow_mode(&self, room: &str, secs: u32) -> Result<Room, ClientError> {
        let body = switchboard_protocol::rest::RoomSettings { slow_mode_secs: Some(secs), filters: None };
        let req = self.request(Method::PATCH, &format!("/v1/rooms/{room}")).json(&body);
        Self::decode(req.send().await?).await
    }

    /// Deletes a member's messages of the last `hours` (moderators); how many went.
    pub async fn purge(&self, room: &str, user: &str, hours: u32) -> Result<u32, ClientError> {
        let body = switchboard_protocol::rest::Purge { user_id: user.to_owned(), hours };
        let req = self.request(Method::POST, &format!("/v1/rooms/{room}/purge")).json(&body);
        Ok(Self::decode::<switchboard_protocol::rest::Purged>(req.send().await?).await?.deleted)
    }

    /// Reports a message (`message_id`) or a member (`user_id`) to the room's moderators.
    pub async fn report(
        &self,
        room: &str,
        report: &switchboard_protocol::rest::NewReport,
    ) -> Result<Report, ClientError> {
        self.send_json(Method::POST, &format!("/v1/rooms/{room}/reports"), report).await
    }

    /// The room's reports, `open` or `resolved`, newest first (moderators).
    pub async fn reports(&self, room: &str, status: &str) -> Result<Vec<Report>, ClientError> {
        let q =
            switchboard_protocol::rest::ReportQuery { status: Some(status.to_owned()), ..Default::default() };
        let req = self.request(Method::GET, &format!("/v1/rooms/{room}/reports")).query(&q);
        Ok(Self::decode::<switchboard_protocol::rest::ReportList>(req.send().await?).await?.reports)
    }

    /// Resolves a report with an action (`dismiss`, `delete_message`, `kick`, `mute`, `ban`,
    /// `shadow_ban`), for moderators.
    pub async fn resolve_report(
        &self,
        room: &str,
        id: u64,
        action: &str,
        duration_secs: Option<u64>,
        reason: Option<&str>,
    ) -> Result<Report, ClientError> {
        let body = switchboard_protocol::rest::ResolveReport {
            action: action.to_owned(),
            duration_secs,
            reason: reason.map(str::to_owned),
        };
        self.send_json(Method::POST, &format!("/v1/rooms/{room}/reports/{id}/resolve"), &body).await
    }

    /// Replaces the room's filters (moderators).
    pub async fn set_filters(&self, room: &str, filters: Filters) -> Result<Room, ClientError> {
        let body = switchboard_protocol::rest::RoomSettings { slow_mode_secs: None, filters: Some(filters) };
        let req = self.request(Method::PATCH, &format!("/v1/rooms/{room}")).json(&body);
        Self::decode(req.send().await?).await
    }

    /// The room's filters (moderators).
    pub async fn filters(&self, room: &str) -> Result<Filters, ClientError> {
        Self::decode(self.request(Method::GET, &format!("/v1/rooms/{room}/filters")).send().await?).await
    }

    /// Lifts a ban (`what` = `bans`) or mute (`mutes`).
    pub async fn lift(&self, room: &str, what: &str, user: &str) -> Result<(), ClientError> {
        Self::empty(self.request(Method::DELETE, &format!("/v1/rooms/{room}/{what}/{user}")).send().await?)
            .await
    }

    /// A page of the room's audit log, newest first (moderators).
    pub async fn audit(&self, room: &str, before: Option<u64>) -> Result<Vec<AuditEntry>, ClientError> {
        let req = self
            .request(Method::GET, &format!("/v1/rooms/{room}/audit"))
            .query(&AuditQuery { before, ..Default::default() });
        Ok(Self::decode::<AuditList>(req.send().await?).await?.entries)
    }

    /// A page of the room's audit log narrowed by `q` (action, target, by), newest first.
    pub async fn audit_where(&self, room: &str, q: &AuditQuery) -> Result<Vec<AuditEntry>, ClientError> {
        let req = self.request(Method::GET, &format!("/v1/rooms/{room}/audit")).query(q);
        Ok(Self::decode::<AuditList>(req.send().await?).await?.entries)
    }

    /// Current members.
    pub async fn members(&self, room: &str) -> Result<MemberList, ClientError> {
        Self::decode(self.request(Method::GET, &format!("/v1/rooms/{room}/members")).send().await?).await
    }

    /// Posts a message with an idempotency key.
    pub async fn post_message(
        &self,
        room: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Result<Message, ClientError> {
        let b = PostMessage { client_msg_id: client_msg_id.into(), body: body.into() };
        self.send_json(Method::POST, &format!("/v1/rooms/{room}/messages"), &b).await
    }

    /// A page of history.
    pub async fn history(&self, room: &str, q: &HistoryQuery) -> Result<Vec<Message>, ClientError> {
        let req = self.request(Method::GET, &format!("/v1/rooms/{room}/messages")).query(q);
        let list: MessageList = Self::decode(req.send().await?).await?;
        Ok(list.messages)
    }

    /// Edits a message.
    pub async fn edit_message(&self, room: &str, id: &str, body: &str) -> Result<TimelineEvent, ClientError> {
        let b = EditMessage { body: body.into() };
        self.send_json(Method::PATCH, &format!("/v1/rooms/{room}/messages/{id}"), &b).await
    }

    /// Deletes a message.
    pub async fn delete_message(&self, room: &str, id: &str) -> Result<TimelineEvent, ClientError> {
        Self::decode(self.request(Method::DELETE, &format!("/v1/rooms/{room}/messages/{id}")).send().await?)
            .await
    }

    /// Moves the read marker.
    pub async fn mark_read(&self, room: &str, seq: u64) -> Result<ReadState, ClientError> {
        self.send_json(Method::POST, &format!("/v1/rooms/{room}/read"), &MarkRead { seq }).await
    }
}

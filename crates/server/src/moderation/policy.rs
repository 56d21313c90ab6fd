//! Who may do what in a room: one table, read by both stores inside the transaction of the
//! write it guards, and written out in docs/moderation.md.
//!
//! Roles rank owner > admin > moderator > member. An action names the lowest role that may take
//! it; an action on another member also needs the actor to outrank that member, so a moderator
//! cannot remove an admin and an admin cannot demote the owner. Nobody moderates a dm (it has no
//! owner: each person deletes their own messages, and nobody removes the other).

use switchboard_protocol::Role;

/// Something a member does to the room or to another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Remove another member (they come back only through a moderator).
    RemoveMember,
    /// Delete another member's message.
    DeleteOthersMessage,
    /// Add or invite someone into a private room, or let back someone a moderator removed.
    AddToPrivateRoom,
    /// Withdraw an invite someone else sent.
    WithdrawOthersInvite,
    /// Change another member's role.
    SetRole,
    /// Read the room's audit log.
    ReadAudit,
    /// Ban someone (remove them and keep them out), or lift a ban.
    Ban,
    /// Mute someone (no sending), or lift a mute.
    Mute,
    /// Change the room's settings (slow mode).
    ConfigureRoom,
    /// Send without waiting out slow mode.
    BypassSlowMode,
    /// See the room's reports (live too) and resolve them.
    HandleReports,
}

/// Every action, for tests and docs.
pub const ACTIONS: [Action; 11] = [
    Action::RemoveMember,
    Action::DeleteOthersMessage,
    Action::AddToPrivateRoom,
    Action::WithdrawOthersInvite,
    Action::SetRole,
    Action::ReadAudit,
    Action::Ban,
    Action::Mute,
    Action::ConfigureRoom,
    Action::BypassSlowMode,
    Action::HandleReports,
];

/// The table: the lowest role that may take each action, and whether the actor must outrank
/// the member acted on.
pub const TABLE: [(Action, Role, bool); 11] = [
    (Action::RemoveMember, Role::Moderator, true),
    (Action::DeleteOthersMessage, Role::Moderator, true),
    (Action::AddToPrivateRoom, Role::Moderator, false),
    (Action::WithdrawOthersInvite, Role::Moderator, false),
    (Action::SetRole, Role::Admin, true),
    (Action::ReadAudit, Role::Moderator, false),
    (Action::Ban, Role::Moderator, true),
    (Action::Mute, Role::Moderator, true),
    (Action::ConfigureRoom, Role::Moderator, false),
    (Action::BypassSlowMode, Role::Moderator, false),
    (Action::HandleReports, Role::Moderator, false),
];

/// A role's rank; `None` (not a member) ranks lowest.
pub fn rank(role: Option<Role>) -> u8 {
    match role {
        None => 0,
        Some(Role::Member) => 1,
        Some(Role::Moderator) => 2,
        Some(Role::Admin) => 3,
        Some(Role::Owner) => 4,
    }
}

/// Whether `actor` may take `action` on a member whose role is `target` (`None` for actions on
/// the room, or on someone who is not a member).
pub fn may(action: Action, actor: Option<Role>, target: Option<Role>) -> bool {
    let Some((_, least, outrank)) = TABLE.iter().find(|(a, _, _)| *a == action) else { return false };
    rank(actor) >= rank(Some(*least)) && (!outrank || rank(actor) > rank(target))
}

/// Whether `actor` may make a member whose role is `target` a `new` one: they may set roles,
/// outrank the member, and outrank the role they give (nobody makes an owner).
pub fn may_set_role(actor: Option<Role>, target: Option<Role>, new: Role) -> bool {
    target.is_some() && may(Action::SetRole, actor, target) && rank(actor) > rank(Some(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Option<Role>; 5] =
        [None, Some(Role::Member), Some(Role::Moderator), Some(Role::Admin), Some(Role::Owner)];

    #[test]
    fn every_role_and_action_follows_the_table() {
        for action in ACTIONS {
            for actor in ROLES {
                // On someone below every role: only the least role decides.
                let expected = match action {
                    Action::SetRole => matches!(actor, Some(Role::Admin | Role::Owner)),
                    _ => matches!(actor, Some(Role::Moderator | Role::Admin | Role::Owner)),
                };
                assert_eq!(may(action, actor, Some(Role::Member)), expected, "{action:?} by {actor:?}");
            }
        }
    }

    #[test]
    fn acting_on_another_member_needs_outranking_them() {
        assert!(may(Action::RemoveMember, Some(Role::Moderator), Some(Role::Member)));
        assert!(!may(Action::RemoveMember, Some(Role::Moderator), Some(Role::Moderator)));
        assert!(!may(Action::RemoveMember, Some(Role::Moderator), Some(Role::Admin)));
        assert!(!may(Action::RemoveMember, Some(Role::Admin), Some(Role::Owner)));
        assert!(may(Action::DeleteOthersMessage, Some(Role::Owner), Some(Role::Admin)));
        assert!(!may(Action::DeleteOthersMessage, Some(Role::Admin), Some(Role::Admin)));
        // Room actions have no target to outrank.
        assert!(may(Action::AddToPrivateRoom, Some(Role::Moderator), None));
        assert!(may(Action::ReadAudit, Some(Role::Moderator), None));
        assert!(!may(Action::ReadAudit, Some(Role::Member), None));
    }

    #[test]
    fn roles_are_given_only_below_ones_own_and_never_owner() {
        let (owner, admin, moderator) = (Some(Role::Owner), Some(Role::Admin), Some(Role::Moderator));
        assert!(may_set_role(owner, Some(Role::Member), Role::Admin));
        assert!(may_set_role(owner, Some(Role::Admin), Role::Member));
        assert!(!may_set_role(owner, Some(Role::Member), Role::Owner), "nobody makes an owner");
        assert!(may_set_role(admin, Some(Role::Member), Role::Moderator));
        assert!(!may_set_role(admin, Some(Role::Member), Role::Admin), "not one's own rank");
        assert!(!may_set_role(admin, Some(Role::Admin), Role::Member), "not a peer");
        assert!(!may_set_role(admin, Some(Role::Owner), Role::Member));
        assert!(!may_set_role(moderator, Some(Role::Member), Role::Moderator));
        assert!(!may_set_role(owner, None, Role::Member), "only members have roles");
    }
}

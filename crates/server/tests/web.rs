//! The browser client's files, served by the server: the page with a strict content security
//! policy, revalidation with ETags, and nothing outside `web/app/` reachable.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_page_is_served_with_a_strict_policy_and_etag() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let page = http.get(&server.base).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(page.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
    let etag = page.headers()[ETAG].clone();
    assert!(page.text().await.unwrap().contains("<html"));

    let again = http.get(&server.base).header(IF_NONE_MATCH, etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let same = http.get(format!("{}/index.html", server.base)).send().await.unwrap();
    assert_eq!(same.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_escapes_get_the_json_404() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for path in
        ["/nope.js", "/v1/nope", "/%2e%2e/Cargo.toml", "/..%2f..%2fCargo.toml", "/.%2e/web/app/index.html"]
    {
        let resp = http.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(resp.text().await.unwrap().contains("\"not_found\""), "{path}");
    }
    let post = http.post(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::NOT_FOUND);

    // Raw request targets that an HTTP client would normalise away.
    let addr = server.base.trim_start_matches("http://").to_owned();
    for target in ["/../../Cargo.toml", "/../Cargo.toml", "//etc/passwd", "/./../crates/server/Cargo.toml"] {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{target}: {answer}"
        );
        assert!(!answer.contains("[package]") && !answer.contains("root:"), "{target} leaked a file");
    }
}

//! The AWS SDK clients speak TLS to `https://` endpoints (AWS itself) and plain HTTP to
//! `http://` ones (local servers): a TCP listener standing in for an `https://`
//! endpoint must receive a TLS handshake.

use deploysphere_adapters::s3::{ObjectStore, S3Config};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn an_https_endpoint_gets_a_tls_handshake() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_byte = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.read_u8().await.unwrap()
    });
    let store = ObjectStore::new(&S3Config {
        endpoint: Some(format!("https://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        bucket: "b".into(),
        access_key: "k".into(),
        secret_key: "s".into(),
        session_token: None,
    });
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), store.exists("x")).await;
    assert!(!matches!(answer, Ok(Ok(_))), "no real S3 answered");
    // 0x16: a TLS record of type handshake (the ClientHello).
    let first_byte = tokio::time::timeout(std::time::Duration::from_secs(5), first_byte)
        .await
        .expect("the client never connected");
    assert_eq!(first_byte.unwrap(), 0x16);
}

//! ElastiCache (transit encryption on) is reached at `rediss://`: the Redis client must
//! speak TLS there. A TCP listener standing in for it must receive a TLS handshake.

use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_rediss_url_gets_a_tls_handshake() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_byte = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.read_u8().await.unwrap()
    });
    let client =
        redis::Client::open(format!("rediss://:token@127.0.0.1:{port}")).expect("a rediss URL");
    let connect = client.get_multiplexed_async_connection();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), connect).await;
    assert!(!matches!(answer, Ok(Ok(_))), "nothing real answered");
    let first_byte = tokio::time::timeout(std::time::Duration::from_secs(5), first_byte)
        .await
        .expect("the client never connected");
    // 0x16: a TLS record of type handshake (the ClientHello).
    assert_eq!(first_byte.unwrap(), 0x16);
}

//! A tokens file without any token (empty, or only comments) is refused at start and on
//! SIGHUP like a malformed one, unless `--allow-empty-tokens`: it would lock every caller
//! out.

use std::time::Duration;

use crm_comms::pb::{self, customer_service_client::CustomerServiceClient};
use crm_comms::security::tokens::{new_token, Role};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::Code;

use crate::backend_tests;
use crate::security::sighup;

/// Creates a customer as the bearer of `token`.
async fn create(channel: &Channel, token: &str) -> Result<i64, tonic::Status> {
    let mut request = tonic::Request::new(pb::CreateCustomerRequest {
        customer: Some(pb::Customer {
            name: "token".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    Ok(CustomerServiceClient::new(channel.clone())
        .create_customer(request)
        .await?
        .into_inner()
        .id)
}

backend_tests! {
    async fn a_tokens_file_without_tokens_is_refused_at_start_and_on_sighup(app: &TestApp) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (token, line) = new_token(Role::Writer, "billing").unwrap();

        // At start: empty and comment-only files stop the server, naming the flag.
        for text in ["", "# nobody yet\n\n   \n# writer billing 00\n"] {
            std::fs::write(&path, text).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut config = crm_comms::config::Config::new(listener.local_addr().unwrap(), app.database_url.clone());
            config.auth_tokens_file = Some(path.clone());
            let (_stop, rx) = tokio::sync::watch::channel(false);
            let serve = crm_comms::server::serve_with_index(config, app.db.clone(), listener, rx, None);
            let err = tokio::time::timeout(Duration::from_secs(10), serve).await.expect("the start is refused, not served").unwrap_err();
            let message = format!("{err:#}");
            assert!(message.contains("holds no token") && message.contains("--allow-empty-tokens"), "{message}");
        }
        // With --allow-empty-tokens it starts, and refuses every caller.
        let (locked, stop_locked) = app
            .another_server(|c| { c.auth_tokens_file = Some(path.clone()); c.allow_empty_tokens = true; }, None)
            .await;
        assert_eq!(create(&locked, &token).await.unwrap_err().code(), Code::Unauthenticated);
        stop_locked.send(true).ok();

        // On SIGHUP: an empty or comment-only file is refused and the tokens in use stay.
        std::fs::write(&path, format!("# tokens\n{line}\n")).unwrap();
        let (channel, stop) = app.another_server(|c| c.auth_tokens_file = Some(path.clone()), None).await;
        create(&channel, &token).await.unwrap();
        for text in ["", "# all commented out\n# writer billing 00\n"] {
            std::fs::write(&path, text).unwrap();
            sighup().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            create(&channel, &token).await.unwrap();
        }
        stop.send(true).ok();
    }
}

//! What security costs a call: the same calls on the same SQLite database, served by the
//! release `crm-comms` binary plainly (loopback, no tokens) and with bearer tokens over TLS
//! (the guard's SHA-256 look-up, the rate limiter, TLS records), measured in alternating
//! rounds in one run and printed as ratios (this machine is noisy).
//!
//! Run: `cargo bench --bench security`. Sizes: `CRM_BENCH_SECURITY_CALLS` (GetCustomer
//! calls per round, default 20,000; LogCommunication a quarter of it),
//! `CRM_BENCH_SECURITY_CLIENTS` (concurrent clients, default 16),
//! `CRM_BENCH_SECURITY_CONNECTS` (new connections per round, default 200).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use crm_comms::model::caller::Role;
use crm_comms::pb::customer_service_client::CustomerServiceClient;
use crm_comms::pb::{self, communication_service_client::CommunicationServiceClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const SERVER: &str = env!("CARGO_BIN_EXE_crm-comms");
const ROUNDS: usize = 3;
const CUSTOMERS: i64 = 100;

/// How a server is reached: plaintext, or TLS with a bearer token.
#[derive(Clone)]
struct Access {
    addr: String,
    tls: Option<String>,
    header: Option<String>,
}

impl Access {
    async fn channel(&self) -> Result<Channel> {
        match &self.tls {
            None => common::connect(&self.addr).await,
            Some(ca) => {
                let port = self.addr.rsplit(':').next().unwrap_or_default();
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name("localhost");
                Ok(Channel::from_shared(format!("https://localhost:{port}"))?
                    .tls_config(tls)?
                    .connect()
                    .await?)
            }
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        request
    }
}

/// Calls per second of `calls` calls made by `one(channel, access, i)` for i in
/// 0..calls, spread over `clients` concurrent clients, each on its own connection.
async fn rate<F, Fut>(access: &Access, clients: usize, calls: usize, one: F) -> Result<f64>
where
    F: Fn(Channel, Access, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut channels = Vec::new();
    for _ in 0..clients {
        channels.push(access.channel().await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, channel) in channels.into_iter().enumerate() {
        let (access, one) = (access.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..calls).step_by(clients) {
                one(channel.clone(), access.clone(), i).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// Calls per second of `calls` GetCustomer calls from `clients` concurrent clients.
async fn get_rate(access: &Access, clients: usize, calls: usize) -> Result<f64> {
    rate(access, clients, calls, |channel, access, i| async move {
        let id = 1 + (i as i64 % CUSTOMERS);
        CustomerServiceClient::new(channel)
            .get_customer(access.request(pb::GetCustomerRequest { id }))
            .await
            .expect("GetCustomer");
    })
    .await
}

/// Calls per second of `calls` LogCommunication calls from `clients` concurrent clients.
async fn log_rate(access: &Access, clients: usize, calls: usize) -> Result<f64> {
    rate(access, clients, calls, |channel, access, i| async move {
        let communication = pb::Communication {
            customer_id: 1 + (i as i64 % CUSTOMERS),
            channel: pb::Channel::Note as i32,
            direction: pb::Direction::Inbound as i32,
            occur_time: Some(common::timestamp(1_735_689_600 + i as i64, 0)),
            content: format!("客户来电询问订单 {i} 的物流"),
            ..Default::default()
        };
        CommunicationServiceClient::new(channel)
            .log_communication(access.request(pb::LogCommunicationRequest {
                communication: Some(communication),
                request_id: String::new(),
            }))
            .await
            .expect("LogCommunication");
    })
    .await
}

/// Milliseconds per new connection and its first call, sequentially.
async fn connect_ms(access: &Access, connects: usize) -> Result<f64> {
    let started = Instant::now();
    for i in 0..connects {
        let mut client = CustomerServiceClient::new(access.channel().await?);
        let id = 1 + (i as i64 % CUSTOMERS);
        client
            .get_customer(access.request(pb::GetCustomerRequest { id }))
            .await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / connects as f64)
}

#[tokio::main]
async fn main() -> Result<()> {
    let calls = common::env_usize("CRM_BENCH_SECURITY_CALLS", 20_000);
    let clients = common::env_usize("CRM_BENCH_SECURITY_CLIENTS", 16).max(1);
    let connects = common::env_usize("CRM_BENCH_SECURITY_CONNECTS", 200).max(1);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("crm.db").display());

    // A certificate for localhost and a writer's token, as an operator would make them.
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.self_signed(&key)?;
    std::fs::write(dir.path().join("server.pem"), cert.pem())?;
    std::fs::write(dir.path().join("server.key"), key.serialize_pem())?;
    let (token, line) = crm_comms::security::tokens::new_token(Role::Writer, "bench")?;
    std::fs::write(dir.path().join("tokens"), format!("{line}\n"))?;

    let startup = Duration::from_secs(60);
    let no_index = [("CRM_CONTENT_INDEX", "false")];
    let plain_server = common::Server::start_with(SERVER, &url, startup, &no_index).await?;
    let cert_path = dir.path().join("server.pem").display().to_string();
    let key_path = dir.path().join("server.key").display().to_string();
    let tokens_path = dir.path().join("tokens").display().to_string();
    let secured_server = common::Server::start_with(
        SERVER,
        &url,
        startup,
        &[
            ("CRM_CONTENT_INDEX", "false"),
            ("CRM_TLS_CERT", &cert_path),
            ("CRM_TLS_KEY", &key_path),
            ("CRM_AUTH_TOKENS_FILE", &tokens_path),
        ],
    )
    .await?;
    let plain = Access {
        addr: plain_server.addr.clone(),
        tls: None,
        header: None,
    };
    let secured = Access {
        addr: secured_server.addr.clone(),
        tls: Some(cert.pem()),
        header: Some(format!("Bearer {token}")),
    };

    let mut customers = CustomerServiceClient::new(plain.channel().await?);
    for i in 0..CUSTOMERS {
        customers
            .create_customer(pb::CreateCustomerRequest {
                customer: Some(pb::Customer {
                    name: format!("客户 {i}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?;
    }

    println!(
        "security bench: {calls} GetCustomer and {} LogCommunication calls from {clients} \
         clients, {connects} new connections, {ROUNDS} alternating rounds, medians",
        calls / 4
    );
    let (mut gets, mut logs, mut conns) = (
        [Vec::new(), Vec::new()],
        [Vec::new(), Vec::new()],
        [Vec::new(), Vec::new()],
    );
    for _ in 0..ROUNDS {
        for (k, access) in [&plain, &secured].into_iter().enumerate() {
            gets[k].push(get_rate(access, clients, calls).await?);
            logs[k].push(log_rate(access, clients, calls / 4).await?);
            conns[k].push(connect_ms(access, connects).await?);
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("| figure | plain (loopback, no tokens) | tokens + TLS | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, unit, digits, pair) in [
        ("GetCustomer", "calls/s", 0, &gets),
        ("LogCommunication", "calls/s", 0, &logs),
        ("new connection + first call", "ms", 2, &conns),
    ] {
        let (p, s) = (median(&pair[0]), median(&pair[1]));
        println!(
            "| {name} | {p:.digits$} {unit} | {s:.digits$} {unit} | {:.2}x |",
            s / p
        );
    }
    Ok(())
}

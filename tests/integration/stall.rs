//! One connection or one caller cannot stall the API: a call holds an in-flight slot only
//! once its request body is complete, a body that never ends is cut at
//! `--request-body-timeout-secs`, and no connection or caller holds more than its share
//! of `--max-in-flight`. Attacks go over a raw HTTP/2 connection (the `h2` crate).

use std::time::{Duration, Instant};

use bytes::Bytes;
use crm_comms::pb;
use crm_comms::security::tokens::{new_token, Role};
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

use crate::backend_tests;
use crate::harness::{
    assert_status, new_customer, note, CommunicationServiceClient, CustomerServiceClient, TestApp,
};

/// `message` as one gRPC frame (flag byte, 4-byte length, bytes).
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// A raw HTTP/2 connection to `addr`.
async fn raw_connection(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A call of `path` on `client` whose body is `body`, ended (`end`) or left open.
async fn raw_call(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
    end: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut ready = client.clone().ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = ready.send_request(request, false).unwrap();
    stream.send_data(Bytes::from(body), end).unwrap();
    *client = ready;
    (response, stream)
}

/// The status a raw call ended with (trailers-only or in the trailers).
async fn raw_status(response: h2::client::ResponseFuture) -> tonic::Status {
    let response = response.await.expect("response headers");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    tonic::Status::from_header_map(&trailers).expect("grpc-status")
}

/// The 99th percentile of `samples` (sorted in place).
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// `n` GetCustomer calls one after another on `channel`: every answer and its latency.
async fn timed_gets(
    channel: &Channel,
    id: i64,
    n: usize,
) -> Vec<(Result<(), tonic::Status>, Duration)> {
    let mut client = CustomerServiceClient::new(channel.clone());
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = client
            .get_customer(pb::GetCustomerRequest { id })
            .await
            .map(|_| ());
        out.push((answer, started.elapsed()));
    }
    out
}

/// An import held open on `channel` with one item sent: in flight until `tx` is dropped.
async fn held_import(
    channel: &Channel,
    customer: i64,
    token: Option<&str>,
) -> (
    tokio::sync::mpsc::Sender<pb::ImportCommunicationsRequest>,
    tokio::task::JoinHandle<Result<pb::ImportCommunicationsResponse, tonic::Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = CommunicationServiceClient::new(channel.clone());
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let call = tokio::spawn(async move {
        client
            .import_communications(request)
            .await
            .map(tonic::Response::into_inner)
    });
    // Fails only when the call was refused already (its stream is gone).
    let _ = tx
        .send(pb::ImportCommunicationsRequest {
            communication: Some(note(customer, "held", "2024-03-01T00:00:00Z")),
            request_id: String::new(),
        })
        .await;
    (tx, call)
}

/// A GetCustomer request with `token`, if any.
fn get(id: i64, token: Option<&str>) -> tonic::Request<pb::GetCustomerRequest> {
    let mut request = tonic::Request::new(pb::GetCustomerRequest { id });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

backend_tests! {
    async fn unfinished_request_bodies_on_one_connection_do_not_stall_other_callers(app: &TestApp) {
        // The defaults (256 in flight, 256 streams per connection), with a body timeout
        // long enough that the attack holds its calls for the whole measurement.
        let (addr, _stop) = serve(app, |c| c.request_body_timeout_secs = 300).await;
        let customer = new_customer(app, "bystander").await;
        let victim = connect(addr).await;
        const N: usize = 200;
        // Warm the connection and the pool first, so the unloaded p99 is not a cold start.
        timed_gets(&victim, customer, 20).await;
        let unloaded = timed_gets(&victim, customer, N).await;
        assert!(unloaded.iter().all(|(a, _)| a.is_ok()), "unloaded: {:?}", unloaded.iter().find(|(a, _)| a.is_err()));
        let mut unloaded: Vec<Duration> = unloaded.into_iter().map(|(_, d)| d).collect();
        let unloaded_p99 = p99(&mut unloaded);

        // 256 calls on one connection whose bodies never end: half send the whole
        // message without ending the stream, half stop inside it.
        let mut attacker = raw_connection(addr).await;
        let message = grpc_frame(&pb::GetCustomerRequest { id: customer });
        let mut held = Vec::new();
        for i in 0..256 {
            let body = if i % 2 == 0 { message.clone() } else { message[..6].to_vec() };
            held.push(raw_call(&mut attacker, addr, "/crm.v1.CustomerService/GetCustomer", body, false).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;

        let loaded = timed_gets(&victim, customer, N).await;
        let failed: Vec<_> = loaded.iter().filter_map(|(a, _)| a.as_ref().err()).collect();
        let mut loaded: Vec<Duration> = loaded.iter().map(|(_, d)| *d).collect();
        let loaded_p99 = p99(&mut loaded);
        eprintln!(
            "{:?}: {} of {N} calls failed under the attack; p99 {:.2} ms unloaded, {:.2} ms loaded",
            app.backend,
            failed.len(),
            unloaded_p99.as_secs_f64() * 1e3,
            loaded_p99.as_secs_f64() * 1e3,
        );
        assert!(failed.is_empty(), "{} of {N} failed, first: {:?}", failed.len(), failed[0]);
        assert!(
            loaded_p99 < unloaded_p99 * 10 + Duration::from_millis(50),
            "p99 {loaded_p99:?} under the attack, {unloaded_p99:?} without"
        );
        // The attack's calls were open all along: none has been answered.
        for (response, _) in &mut held {
            assert!(
                tokio::time::timeout(Duration::ZERO, response).await.is_err(),
                "an unfinished call was answered"
            );
        }
        drop(held);
    }

    async fn a_request_body_that_never_ends_is_cut_at_the_body_timeout(app: &TestApp) {
        let (addr, _stop) = serve(app, |c| c.request_body_timeout_secs = 1).await;
        let _ = connect(addr).await;
        let customer = new_customer(app, "slow").await;
        let message = grpc_frame(&pb::GetCustomerRequest { id: customer });
        let mut client = raw_connection(addr).await;
        let started = Instant::now();
        // The whole message but no end of stream, and half a message.
        let (whole, _keep_whole) = raw_call(&mut client, addr, "/crm.v1.CustomerService/GetCustomer", message.clone(), false).await;
        let (half, _keep_half) = raw_call(&mut client, addr, "/crm.v1.CustomerService/GetCustomer", message[..6].to_vec(), false).await;
        // And a body trickling in, a byte every 100 ms (10 s for the whole message).
        let (trickled, mut stream) = raw_call(&mut client, addr, "/crm.v1.CustomerService/ListCustomers", Vec::new(), false).await;
        let slow = grpc_frame(&pb::ListCustomersRequest { query: "x".repeat(90), ..Default::default() });
        let _dripper = tokio::spawn(async move {
            for byte in slow {
                if stream.send_data(Bytes::from(vec![byte]), false).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stream
        });
        for response in [whole, half, trickled] {
            let status = tokio::time::timeout(Duration::from_secs(10), raw_status(response))
                .await
                .expect("the unfinished call is answered within 10 s");
            assert_status(&status, Code::DeadlineExceeded, "REQUEST_BODY_TIMEOUT");
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "cut after {elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "cut after {elapsed:?}");
        // The connection still serves: a call that ends its body is answered.
        let (ok, _) = raw_call(&mut client, addr, "/crm.v1.CustomerService/GetCustomer", message, true).await;
        assert_eq!(raw_status(ok).await.code(), Code::Ok);
    }

    async fn one_connection_holds_at_most_its_share_of_the_in_flight_calls(app: &TestApp) {
        // 8 in flight: 2 per connection by default.
        let (addr, _stop) = serve(app, |c| c.max_in_flight = 8).await;
        let customer = new_customer(app, "share").await;
        let first = connect(addr).await;
        let imports = [held_import(&first, customer, None).await, held_import(&first, customer, None).await];
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A third call on that connection is refused at once, a unary one and a stream.
        let started = Instant::now();
        let err = CustomerServiceClient::new(first.clone()).get_customer(get(customer, None)).await.unwrap_err();
        assert_status(&err, Code::ResourceExhausted, "CONNECTION_OVERLOADED");
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once");
        let (tx, third) = held_import(&first, customer, None).await;
        drop(tx);
        assert_status(&third.await.unwrap().unwrap_err(), Code::ResourceExhausted, "CONNECTION_OVERLOADED");
        // Another connection is served.
        let second = connect(addr).await;
        CustomerServiceClient::new(second).get_customer(get(customer, None)).await.unwrap();
        // The imports end: their slots are given back and the first connection is served.
        for (tx, call) in imports {
            drop(tx);
            assert_eq!(call.await.unwrap().unwrap().accepted_count, 1);
        }
        CustomerServiceClient::new(first).get_customer(get(customer, None)).await.unwrap();
    }

    async fn one_caller_holds_at_most_its_share_over_all_its_connections(app: &TestApp) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (bulk, b) = new_token(Role::Writer, "bulk-loader").unwrap();
        let (reader, r) = new_token(Role::Reader, "dashboards").unwrap();
        std::fs::write(&path, format!("{b}\n{r}\n")).unwrap();
        // 8 in flight: 4 per caller, 2 per connection by default.
        let (addr, _stop) = serve(app, move |c| {
            c.max_in_flight = 8;
            c.auth_tokens_file = Some(path);
        })
        .await;
        let channel = connect(addr).await;
        let customer = {
            let mut request = tonic::Request::new(pb::CreateCustomerRequest { customer: Some(pb::Customer { name: "share".into(), ..Default::default() }), request_id: String::new() });
            request.metadata_mut().insert("authorization", format!("Bearer {bulk}").parse().unwrap());
            CustomerServiceClient::new(channel.clone()).create_customer(request).await.unwrap().into_inner().id
        };
        let mut imports = Vec::new();
        for _ in 0..2 {
            let connection = connect(addr).await;
            imports.push(held_import(&connection, customer, Some(&bulk)).await);
            imports.push(held_import(&connection, customer, Some(&bulk)).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = connect(addr).await;
        let err = CustomerServiceClient::new(fresh.clone()).get_customer(get(customer, Some(&bulk))).await.unwrap_err();
        assert_status(&err, Code::ResourceExhausted, "CALLER_OVERLOADED");
        // Another caller on the same connection is served.
        CustomerServiceClient::new(fresh.clone()).get_customer(get(customer, Some(&reader))).await.unwrap();
        for (tx, call) in imports {
            drop(tx);
            assert_eq!(call.await.unwrap().unwrap().accepted_count, 1);
        }
        CustomerServiceClient::new(fresh).get_customer(get(customer, Some(&bulk))).await.unwrap();
    }
}

/// Another server on `app`'s database with `tweak` applied: its address, and the sender
/// that stops it (dropping it stops it too).
async fn serve(
    app: &TestApp,
    tweak: impl FnOnce(&mut crm_comms::config::Config),
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = crm_comms::config::Config::new(addr, app.database_url.clone());
    config.content_index = false;
    tweak(&mut config);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(crm_comms::server::serve(
        config,
        app.db.clone(),
        listener,
        rx,
    ));
    (addr, tx)
}

/// A fresh connection to `addr`.
async fn connect(addr: std::net::SocketAddr) -> Channel {
    let started = Instant::now();
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

//! `--only watch` of the scale benchmark: live reports for wallboards, on the scratch
//! database. `--watchers` clients (500) watch the all-customer daily frequency report of
//! 2025 in five zones (five distinct reports, a hundred watchers each, ten watchers per
//! connection) while `--log-clients` clients (32) log `--log-rows` communications each
//! (random times in 2025: every write changes every watched report).
//!
//! Figures: the write rate with the watchers against the same load with none (measured
//! alternately, `--runs` times each), and the update latency: every 250 ms during the
//! load a probe notes the time a LogCommunication was acknowledged; for every watcher,
//! the latency is the time until it received a state read after that moment (its
//! `as_of` later than the acknowledgment, so the state holds the write). p50 and p99 over
//! every probe and watcher, against the target of about a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use crm_comms::pb::{
    self, analytics_service_client::AnalyticsServiceClient,
    communication_service_client::CommunicationServiceClient,
};

use super::{
    common::{Rng, Server},
    gen_comm, median_f64, ms, percentile, to_pb, Args, Figure, RatioKind, Target, STARTUP,
    YEAR_END, YEAR_START,
};

/// The zones of the watched reports: one distinct report each.
const ZONES: [&str; 5] = [
    "UTC",
    "Asia/Shanghai",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kathmandu",
];
/// Watchers per connection.
const PER_CONNECTION: usize = 10;
/// How often the probe notes an acknowledged write.
const PROBE_EVERY: Duration = Duration::from_millis(250);

fn request(zone: &str) -> pb::WatchFrequencyReportRequest {
    let at = |s: i64| prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    };
    pb::WatchFrequencyReportRequest {
        query: Some(pb::GetFrequencyReportRequest {
            start_time: Some(at(YEAR_START)),
            end_time: Some(at(YEAR_END)),
            granularity: pb::Granularity::Day as i32,
            time_zone: zone.into(),
            top_n: 10,
            ..Default::default()
        }),
        resume_token: String::new(),
    }
}

fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).unwrap_or(0),
            u32::try_from(t.nanos).unwrap_or(0),
        )
}

/// The states one watcher received: when, and read when.
type Received = Arc<Mutex<Vec<(SystemTime, SystemTime)>>>;

/// `clients` clients logging `rows` random communications each; the rate (rows/s).
/// Every [`PROBE_EVERY`] the time of an acknowledged write goes into `probes`.
async fn log_load(
    server: &Server,
    ids: &[i64],
    args: &Args,
    rng: &mut Rng,
    probes: Option<Arc<Mutex<Vec<SystemTime>>>>,
) -> Result<f64> {
    let clients = args.log_clients;
    let mut tasks = Vec::new();
    let started = Instant::now();
    let last_probe = Arc::new(Mutex::new(Instant::now()));
    for _ in 0..clients {
        let rows: Vec<pb::Communication> = (0..args.log_rows)
            .map(|_| to_pb(&gen_comm(rng, ids)))
            .collect();
        let mut c = CommunicationServiceClient::new(server.channel().await?);
        let (probes, last_probe) = (probes.clone(), Arc::clone(&last_probe));
        tasks.push(tokio::spawn(async move {
            for r in rows {
                c.log_communication(pb::LogCommunicationRequest {
                    communication: Some(r),
                    ..Default::default()
                })
                .await?;
                if let Some(p) = &probes {
                    let mut last = last_probe.lock().unwrap_or_else(|e| e.into_inner());
                    if last.elapsed() >= PROBE_EVERY {
                        *last = Instant::now();
                        p.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(SystemTime::now());
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((clients * args.log_rows) as f64 / started.elapsed().as_secs_f64())
}

/// Opens `n` watches; each records what it receives until the returned handles are
/// aborted.
async fn open_watches(
    server: &Server,
    n: usize,
) -> Result<(Vec<Received>, Vec<tokio::task::JoinHandle<()>>)> {
    let mut received = Vec::new();
    let mut tasks = Vec::new();
    let mut channel = server.channel().await?;
    for i in 0..n {
        if i % PER_CONNECTION == 0 {
            channel = server.channel().await?;
        }
        let mut c = AnalyticsServiceClient::new(channel.clone());
        let mut stream = c
            .watch_frequency_report(request(ZONES[i % ZONES.len()]))
            .await?
            .into_inner();
        // The first message (the whole report) before the next watch opens.
        let first = stream
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("watch ended at once"))?;
        anyhow::ensure!(
            matches!(
                first.change,
                Some(pb::watch_frequency_report_response::Change::Report(_))
            ),
            "the first message is the whole report"
        );
        let log: Received = Arc::default();
        let sink = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                if let Some(as_of) = &m.as_of {
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((SystemTime::now(), system_time(as_of)));
                }
            }
        }));
        received.push(log);
    }
    Ok((received, tasks))
}

/// For every probe and watcher, the time until the watcher received a state read after
/// the probe's write was acknowledged.
fn latencies(probes: &[SystemTime], received: &[Received]) -> (Vec<Duration>, usize) {
    let mut out = Vec::new();
    let mut missed = 0;
    for log in received {
        let log = log.lock().unwrap_or_else(|e| e.into_inner());
        for &acked in probes {
            match log.iter().find(|(_, as_of)| *as_of > acked) {
                Some((at, _)) => out.push(at.duration_since(acked).unwrap_or_default()),
                None => missed += 1,
            }
        }
    }
    (out, missed)
}

/// The watch figures (see the module header).
pub async fn measure(t: &Target, args: &Args, out: &mut Vec<Figure>) -> Result<()> {
    let ids = t.scratch_driver.customer_ids().await?;
    let limit = (args.watchers + 16).to_string();
    let server = Server::start_with(
        &super::server_under_test(),
        &t.scratch_url,
        STARTUP,
        &[("CRM_MAX_FOLLOW_STREAMS", &limit)],
    )
    .await?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut alone, mut watched, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut missed = 0;
    for run in 0..args.runs {
        alone.push(log_load(&server, &ids, args, &mut rng, None).await?);
        let opened = Instant::now();
        let (received, tasks) = open_watches(&server, args.watchers).await?;
        let open_secs = opened.elapsed().as_secs_f64();
        let probes = Arc::new(Mutex::new(Vec::new()));
        watched.push(log_load(&server, &ids, args, &mut rng, Some(Arc::clone(&probes))).await?);
        // The last probe's state needs a poll and a computation more.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for task in &tasks {
            task.abort();
        }
        let probes = probes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (lat, miss) = latencies(&probes, &received);
        missed += miss;
        say!(
            "  run {run}: {} watchers opened in {open_secs:.1} s; LogCommunication {:.0}/s alone, {:.0}/s watched; \
             update latency p50 {:.0} ms, p99 {:.0} ms over {} probes x watchers ({miss} not reached)",
            args.watchers,
            alone.last().unwrap_or(&0.0),
            watched.last().unwrap_or(&0.0),
            ms(percentile(lat.clone(), 0.5)),
            ms(percentile(lat.clone(), 0.99)),
            lat.len()
        );
        all.extend(lat);
        // The server drops the topics once it sees the watches gone.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(server);
    let (p50, p99) = (percentile(all.clone(), 0.5), percentile(all.clone(), 0.99));
    let zones = ZONES.len();
    out.push(
        Figure::new(
            t.db,
            format!(
                "LogCommunication, {} clients, with {} watchers of {zones} frequency reports",
                args.log_clients, args.watchers
            ),
            "the same load with no watcher",
            "rows/s",
            median_f64(watched),
            median_f64(alone),
            RatioKind::Speed,
            None,
        )
        .note("scratch database; every write changes every watched report (2025, daily, all customers)"),
    );
    out.push(
        Figure::new(
            t.db,
            format!(
                "watch update latency p99, {} watchers, {} writing clients",
                args.watchers, args.log_clients
            ),
            "about a second (the target)",
            "ms",
            ms(p99),
            1000.0,
            RatioKind::Cost,
            Some(1.0),
        )
        .note(format!(
            "p50 {:.0} ms; acknowledged write to a watcher's first state read after it; {} probes x watchers, {missed} not reached",
            ms(p50),
            all.len()
        )),
    );
    Ok(())
}

//! Exports for BI tools: `ExportService.ExportData` and `crm-comms export` on both
//! backends. A full run holds every table, partitioned by month, with a manifest whose
//! counts, sizes and hashes match the files; a run from its watermark holds only what
//! changed (a new row, a delete, a merge); bad input names its field; only admins may
//! export. (tests/grpcio/test_export.py reads the files back with DuckDB.)

use std::collections::BTreeMap;

use crm_comms::pb::{self, export_service_client::ExportServiceClient};
use crm_comms::security::tokens::{new_token, Role};
use crm_comms::service::export::Manifest;
use sha2::Digest;
use tonic::Code;

use crate::backend_tests;
use crate::harness::{assert_invalid, log, new_customer, note, ts, TestApp};

/// The files of one export run, reassembled from its chunks: path -> bytes.
type Files = BTreeMap<String, Vec<u8>>;

/// Runs an export over RPC; its files.
async fn export(
    app: &TestApp,
    format: pb::ExportFormat,
    since: &str,
) -> Result<Files, tonic::Status> {
    let mut stream = ExportServiceClient::new(app.channel.clone())
        .export_data(pb::ExportDataRequest {
            format: format as i32,
            since_watermark: since.into(),
        })
        .await?
        .into_inner();
    let mut files = Files::new();
    let mut done = Vec::new();
    while let Some(chunk) = stream.message().await? {
        let file = files.entry(chunk.path.clone()).or_default();
        assert_eq!(
            chunk.offset as usize,
            file.len(),
            "chunks in order: {}",
            chunk.path
        );
        assert!(!done.contains(&chunk.path), "one file after the other");
        file.extend_from_slice(&chunk.data);
        if chunk.end_of_file {
            done.push(chunk.path);
        }
    }
    assert_eq!(
        done.last().map(String::as_str),
        Some("manifest.json"),
        "manifest last"
    );
    assert_eq!(done.len(), files.len(), "every file ended");
    Ok(files)
}

fn manifest(files: &Files) -> Manifest {
    serde_json::from_slice(&files["manifest.json"]).unwrap()
}

fn rows_of(m: &Manifest, table: &str) -> u64 {
    m.tables
        .iter()
        .find(|t| t.name == table)
        .map_or(0, |t| t.rows)
}

/// Every file the manifest lists is there, with its size and hash, under
/// `<table>/month=YYYY-MM/`, and nothing else is.
fn check_listing(files: &Files, m: &Manifest) {
    assert_eq!(files.len(), m.files.len() + 1, "{:?}", files.keys());
    for f in &m.files {
        let bytes = &files[&f.path];
        assert_eq!(bytes.len() as u64, f.bytes, "{}", f.path);
        let hex: String = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, f.sha256, "{}", f.path);
        assert!(
            f.path
                .starts_with(&format!("{}/month={}/part-", f.table, f.month)),
            "{}",
            f.path
        );
    }
    for t in &m.tables {
        let listed: u64 = m
            .files
            .iter()
            .filter(|f| f.table == t.name)
            .map(|f| f.rows)
            .sum();
        assert_eq!(listed, t.rows, "{}", t.name);
    }
}

/// The records of one table's CSV files (header checked, then dropped).
fn csv_rows(files: &Files, m: &Manifest, table: &str) -> Vec<csv::StringRecord> {
    let mut out = Vec::new();
    for f in m.files.iter().filter(|f| f.table == table) {
        let mut reader = csv::Reader::from_reader(files[&f.path].as_slice());
        assert!(!reader.headers().unwrap().is_empty(), "a header line");
        for r in reader.records() {
            out.push(r.unwrap());
        }
    }
    out
}

async fn order(app: &TestApp, customer_id: i64, number: &str, units: i64, nanos: i32, at: &str) {
    app.customers()
        .create_transaction(pb::CreateTransactionRequest {
            transaction: Some(pb::Transaction {
                customer_id,
                order_number: number.into(),
                product: "茶叶 🍵".into(),
                amount: Some(pb::Money {
                    currency_code: "CNY".into(),
                    units,
                    nanos,
                }),
                occur_time: Some(ts(at)),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

/// Waits until what was just written is settled (older than the feed's SETTLE).
async fn settle() {
    tokio::time::sleep(crm_comms::service::feed::SETTLE + std::time::Duration::from_millis(300))
        .await;
}

backend_tests! {
    async fn a_full_export_then_an_incremental_one_hold_every_row_once_with_deletes_and_merges(app: &TestApp) {
        let a = new_customer(app, "张三").await;
        let b = new_customer(app, "Ann, \"the\" buyer").await;
        let c = new_customer(app, "C").await;
        let mut comms = app.communications();
        let mut ids = Vec::new();
        for (who, text, at) in [
            (a, "第一次电话,谈价格", "2024-01-15T08:00:00Z"),
            (a, "line one\r\nline \"two\"", "2024-02-01T00:00:00Z"),
            (b, "emoji 😀", "2024-02-29T23:59:59.999999Z"),
            (c, "c's note", "2024-03-01T00:00:00Z"),
        ] {
            ids.push(comms.log_communication(log(note(who, text, at), "")).await.unwrap().into_inner().id);
        }
        order(app, a, "A-1", 12, 340_000_000, "2024-01-20T10:00:00Z").await;
        order(app, b, "B-1", 3, 500_000_000, "2024-02-20T10:00:00Z").await;
        app.customers()
            .create_service_ticket(pb::CreateServiceTicketRequest {
                service_ticket: Some(pb::ServiceTicket {
                    customer_id: a,
                    issue: "late delivery".into(),
                    open_time: Some(ts("2024-01-21T09:00:00Z")),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap();
        comms
            .record_satisfaction(pb::RecordSatisfactionRequest {
                survey: Some(pb::SatisfactionSurvey {
                    target: Some(pb::satisfaction_survey::Target::CommunicationId(ids[1])),
                    score: 2,
                    comment: "slow, \"but\" polite".into(),
                    answer_time: Some(ts("2024-03-02T00:00:00Z")),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap();
        settle().await;

        let full = export(app, pb::ExportFormat::Csv, "").await.unwrap();
        let m = manifest(&full);
        check_listing(&full, &m);
        assert_eq!(m.format, "csv");
        assert_eq!(m.from_watermark, None);
        assert_eq!(rows_of(&m, "customers"), 3);
        assert_eq!(rows_of(&m, "communications"), 4);
        assert_eq!(rows_of(&m, "transactions"), 2);
        assert_eq!(rows_of(&m, "service_tickets"), 1);
        assert_eq!(rows_of(&m, "customer_months"), 4);
        assert_eq!(rows_of(&m, "satisfaction_surveys"), 1);
        let survey = &csv_rows(&full, &m, "satisfaction_surveys")[0];
        assert_eq!(
            (&survey[2], &survey[4], &survey[7], &survey[8]),
            (ids[1].to_string().as_str(), "note", "2", "slow, \"but\" polite")
        );
        // Sentiment travels with each communication: score and class.
        for row in csv_rows(&full, &m, "communications") {
            let score: i16 = row[14].parse().expect("a score");
            assert_eq!(row[15], format!("{:?}", crm_comms::analytics::sentiment::Label::of(score)).to_lowercase());
        }
        let months: Vec<&str> = m.files.iter().filter(|f| f.table == "communications").map(|f| f.month.as_str()).collect();
        assert_eq!(months, ["2024-01", "2024-02", "2024-03"]);
        // Text survives quoting (commas, quotes, CRLF, emoji), times are UTC with
        // microseconds, money is exact.
        let texts: Vec<String> = csv_rows(&full, &m, "communications").iter().map(|r| r[5].to_owned()).collect();
        assert!(texts.contains(&"line one\r\nline \"two\"".to_owned()), "{texts:?}");
        assert!(texts.contains(&"emoji 😀".to_owned()), "{texts:?}");
        let times: Vec<String> = csv_rows(&full, &m, "communications").iter().map(|r| r[4].to_owned()).collect();
        assert!(times.contains(&"2024-02-29T23:59:59.999999Z".to_owned()), "{times:?}");
        let mut amounts: Vec<String> = csv_rows(&full, &m, "transactions").iter().map(|r| r[5].to_owned()).collect();
        amounts.sort();
        assert_eq!(amounts, ["12.340000000", "3.500000000"]);
        let names: Vec<String> = csv_rows(&full, &m, "customers").iter().map(|r| r[1].to_owned()).collect();
        assert!(names.contains(&"Ann, \"the\" buyer".to_owned()), "{names:?}");

        // Then: a delete, a merge, a new row.
        comms.delete_communication(pb::DeleteCommunicationRequest { id: ids[0] }).await.unwrap();
        app.customers()
            .merge_customers(pb::MergeCustomersRequest {
                surviving_customer_id: a,
                merged_customer_ids: vec![c],
                request_id: String::new(),
            })
            .await
            .unwrap();
        let new = comms.log_communication(log(note(b, "after", "2024-04-02T00:00:00Z"), "")).await.unwrap().into_inner().id;
        settle().await;

        let next = export(app, pb::ExportFormat::Csv, &m.to_watermark).await.unwrap();
        let n = manifest(&next);
        check_listing(&next, &n);
        assert_eq!(n.from_watermark.as_deref(), Some(m.to_watermark.as_str()));
        assert!(n.to_watermark > m.to_watermark);
        let new_ids: Vec<String> = csv_rows(&next, &n, "communications").iter().map(|r| r[0].to_owned()).collect();
        assert_eq!(new_ids, [new.to_string()], "only the new communication");
        assert_eq!(rows_of(&n, "transactions"), 0);
        let deleted: Vec<String> = csv_rows(&next, &n, "deleted_communications").iter().map(|r| r[0].to_owned()).collect();
        assert_eq!(deleted, [ids[0].to_string()]);
        let merges: Vec<(String, String)> = csv_rows(&next, &n, "customer_merges").iter().map(|r| (r[1].to_owned(), r[2].to_owned())).collect();
        assert_eq!(merges, [(a.to_string(), c.to_string())]);
        let gone: Vec<(String, String)> = csv_rows(&next, &n, "deleted_customers").iter().map(|r| (r[0].to_owned(), r[1].to_owned())).collect();
        assert_eq!(gone, [(c.to_string(), "merged".to_owned())]);
        // The customers the merge changed, in their latest state (the lookback may
        // bring the others again; a consumer upserts by id).
        let changed: Vec<String> = csv_rows(&next, &n, "customers").iter().map(|r| r[0].to_owned()).collect();
        assert!(changed.contains(&a.to_string()) && changed.contains(&c.to_string()), "{changed:?}");
        // The rollup is whole every time: the deleted row is gone from it, the new one in.
        let total: i64 = csv_rows(&next, &n, "customer_months").iter().map(|r| r[2].parse::<i64>().unwrap()).sum();
        assert_eq!(total, 4);

        // Nothing since: nothing but the customers' lookback and the rollup.
        let same = export(app, pb::ExportFormat::Parquet, &n.to_watermark).await.unwrap();
        let s = manifest(&same);
        check_listing(&same, &s);
        for t in ["communications", "transactions", "deleted_communications", "customer_merges"] {
            assert_eq!(rows_of(&s, t), 0, "{t}");
        }
        for f in &s.files {
            let bytes = &same[&f.path];
            assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "{}", f.path);
        }
    }

    async fn bad_export_requests_are_invalid_argument_naming_their_field(app: &TestApp) {
        let mut client = ExportServiceClient::new(app.channel.clone());
        let e = client.export_data(pb::ExportDataRequest { format: 0, since_watermark: String::new() }).await.unwrap_err();
        assert_invalid(&e, &["format"]);
        let e = client.export_data(pb::ExportDataRequest { format: 9, since_watermark: "yesterday".into() }).await.unwrap_err();
        assert_invalid(&e, &["format", "since_watermark"]);
        let e = client
            .export_data(pb::ExportDataRequest {
                format: pb::ExportFormat::Csv as i32,
                since_watermark: "2999-01-01T00:00:00Z".into(),
            })
            .await
            .unwrap_err();
        assert_invalid(&e, &["since_watermark"]);
    }

    async fn only_admins_may_export(app: &TestApp) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (writer, w) = new_token(Role::Writer, "billing").unwrap();
        let (admin, a) = new_token(Role::Admin, "ops").unwrap();
        std::fs::write(&path, format!("{w}\n{a}\n")).unwrap();
        let (channel, _stop) = app.another_server(move |c| c.auth_tokens_file = Some(path), None).await;
        let call = |token: String| {
            let channel = channel.clone();
            async move {
                let mut request = tonic::Request::new(pb::ExportDataRequest {
                    format: pb::ExportFormat::Csv as i32,
                    since_watermark: String::new(),
                });
                request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
                let mut stream = ExportServiceClient::new(channel).export_data(request).await?.into_inner();
                let mut n = 0;
                while stream.message().await?.is_some() {
                    n += 1;
                }
                Ok::<_, tonic::Status>(n)
            }
        };
        let e = call(writer).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(call(admin).await.unwrap() >= 1);
    }

    async fn the_export_command_writes_the_files_the_manifest_lists_and_continues_from_it(app: &TestApp) {
        let a = new_customer(app, "A").await;
        app.communications().log_communication(log(note(a, "hi", "2024-05-05T05:05:05Z"), "")).await.unwrap();
        settle().await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("full");
        let out_s = out.to_str().unwrap();
        let (ok, text) = crate::harness::run_binary(&["export", "--format", "parquet", "--out", out_s], &app.database_url);
        assert!(ok, "{text}");
        let m: Manifest = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert!(text.contains(&format!("--since {}", m.to_watermark)), "{text}");
        let mut files = Files::new();
        for f in &m.files {
            files.insert(f.path.clone(), std::fs::read(out.join(&f.path)).unwrap());
        }
        files.insert("manifest.json".into(), Vec::new());
        check_listing(&files, &m);
        assert_eq!(rows_of(&m, "communications"), 1);

        let next = dir.path().join("next");
        let manifest_path = out.join("manifest.json");
        let (ok, text) = crate::harness::run_binary(
            &["export", "--format", "csv", "--out", next.to_str().unwrap(), "--since-manifest", manifest_path.to_str().unwrap()],
            &app.database_url,
        );
        assert!(ok, "{text}");
        let n: Manifest = serde_json::from_slice(&std::fs::read(next.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(n.from_watermark.as_deref(), Some(m.to_watermark.as_str()));
        assert_eq!(rows_of(&n, "communications"), 0);

        let (ok, text) = crate::harness::run_binary(&["export", "--format", "csv", "--out", out_s, "--since", "soon"], &app.database_url);
        assert!(!ok && text.contains("--since"), "{text}");
        let (ok, text) = crate::harness::run_binary(&["export", "--format", "xml", "--out", out_s], &app.database_url);
        assert!(!ok && text.contains("xml"), "{text}");
    }
}

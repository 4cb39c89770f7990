//! Server-wide behaviour: reflection, health, and shutdown.

use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::harness::{Backend, TestApp};
use crate::standalone_tests;

standalone_tests! {
    async fn health_reports_each_service_and_not_serving_on_shutdown() {
        let mut app = TestApp::start(Backend::Sqlite).await.unwrap();
        let mut health = HealthClient::new(app.channel.clone());
        for service in [
            "",
            "crm.v1.CustomerService",
            "crm.v1.CommunicationService",
            "crm.v1.AnalyticsService",
        ] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let mut watch = health
            .watch(HealthCheckRequest {
                service: "crm.v1.CustomerService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            watch.message().await.unwrap().unwrap().status,
            ServingStatus::Serving as i32
        );
        app.begin_shutdown();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
            .await
            .expect("health watch sees the change")
            .unwrap()
            .unwrap();
        assert_eq!(next.status, ServingStatus::NotServing as i32);
        app.stop().await;
    }

    async fn reflection_v1_and_v1alpha_list_all_services() {
        use tonic_reflection::pb::{v1, v1alpha};
        let app = TestApp::start(Backend::Sqlite).await.unwrap();

        let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            response.message_response
        else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for want in [
            "crm.v1.CustomerService",
            "crm.v1.CommunicationService",
            "crm.v1.AnalyticsService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }

        let mut alpha =
            v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "crm.v1.CommunicationService".into(),
                ),
            ),
        };
        let mut stream = alpha
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        assert!(matches!(
            response.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
        ));
    }

    async fn unreachable_or_malformed_database_fails_clearly() {
        let opts = crm_comms::db::PoolOptions::default();
        let err = crm_comms::db::Db::connect("postgres://x/y", &opts)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("unsupported DATABASE_URL"),
            "{err:#}"
        );
        let err = crm_comms::db::Db::connect("mysql://root@127.0.0.1:1/nothing", &opts)
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot connect to MySQL"),
            "{err:#}"
        );
        let err = crm_comms::db::Db::connect("mysql://root@127.0.0.1", &opts)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("malformed"), "{err:#}");
    }
}

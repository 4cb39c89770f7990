//! Page tokens carry no personal data: a duplicate listing's token (whose position is a
//! phone, an email or a name) is sealed, so none of the fixture's phones, emails or names
//! shows in its bytes; paging still returns every group exactly once, also when another
//! server of the deployment continues it.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use crm_comms::pb::{self, customer_service_client::CustomerServiceClient};
use tonic::transport::Channel;

use crate::backend_tests;
use crate::harness::assert_invalid;

/// The fixture: pairs sharing a phone, an email, or a name.
const PEOPLE: [(&str, &str, &str); 8] = [
    ("Zhang Wei", "+8613800138000", "zhang.wei@example.com"),
    ("Zhang Wei", "+8613800138000", "wei.zhang@example.org"),
    ("Li Na", "+8613900139000", "li.na@example.com"),
    ("Liu Yang", "+8613700137000", "li.na@example.com"),
    ("Wang Fang", "+8613600136000", "wang.fang@example.com"),
    ("Wang Fang", "+8613500135000", "fang.wang@example.net"),
    ("Chen Jing", "+8613400134000", "chen.jing@example.com"),
    ("Chen Jing", "+8613300133000", "jing.chen@example.com"),
];

/// Every group value, walking pages of one group on `first` then, token by token,
/// alternately on `other` (another server of the same database); asserts each token
/// shows no personal data of the fixture.
async fn walk(first: &Channel, other: &Channel, include_name_groups: bool) -> Vec<(i32, String)> {
    let mut seen = Vec::new();
    let mut token = String::new();
    for turn in 0.. {
        let channel = if turn % 2 == 0 { first } else { other };
        let page = CustomerServiceClient::new(channel.clone())
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest {
                page_size: 1,
                page_token: token,
                include_name_groups,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.groups.iter().map(|g| (g.key, g.value.clone())));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for (name, phone, email) in PEOPLE {
            let digits = phone.trim_start_matches('+');
            for personal in [
                name.to_lowercase().as_str(),
                "zhang",
                "wang",
                "chen",
                digits,
                &digits[2..],
                email,
                email.split('@').next().unwrap(),
            ] {
                assert!(
                    !text.contains(personal),
                    "token {token} shows {personal:?}: {text:?}"
                );
                assert!(
                    !token.to_lowercase().contains(personal),
                    "token {token} shows {personal:?}"
                );
            }
        }
    }
    seen
}

backend_tests! {
    async fn duplicate_listing_tokens_hold_no_personal_data_and_page_every_group_once(app: &TestApp) {
        let mut client = app.customers();
        for (name, phone, email) in PEOPLE {
            client
                .create_customer(pb::CreateCustomerRequest {
                    customer: Some(pb::Customer { name: name.into(), phone: phone.into(), email: email.into(), ..Default::default() }),
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
        let (other, stop) = app.another_server(|_| {}, None).await;
        for include_name_groups in [false, true] {
            let all = client
                .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 100, page_token: String::new(), include_name_groups })
                .await
                .unwrap()
                .into_inner();
            assert!(all.next_page_token.is_empty());
            let expected: Vec<(i32, String)> = all.groups.iter().map(|g| (g.key, g.value.clone())).collect();
            // A phone group and an email group; with names, the name groups too.
            assert!(expected.len() >= if include_name_groups { 4 } else { 2 }, "{expected:?}");
            let walked = walk(&app.channel, &other, include_name_groups).await;
            assert_eq!(walked, expected);
        }
        // A token still only works with the filters it was issued for, and a forged or
        // altered one is refused.
        let page = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 1, page_token: String::new(), include_name_groups: false })
            .await
            .unwrap()
            .into_inner();
        let err = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 1, page_token: page.next_page_token.clone(), include_name_groups: true })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
        let mut altered = URL_SAFE_NO_PAD.decode(&page.next_page_token).unwrap();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let err = client
            .list_duplicate_customers(pb::ListDuplicateCustomersRequest { page_size: 1, page_token: URL_SAFE_NO_PAD.encode(altered), include_name_groups: false })
            .await
            .unwrap_err();
        assert_invalid(&err, &["page_token"]);
        stop.send(true).ok();
    }
}

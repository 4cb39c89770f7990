//! The diesel schema, written once for both backends.
//!
//! Portable types only: `Timestamp` is `DATETIME(6)` on MySQL and text on SQLite.

#![allow(missing_docs)]

diesel::table! {
    customers (id) {
        id -> BigInt,
        name -> Text,
        gender -> Integer,
        birth_date -> Nullable<Date>,
        address -> Text,
        phone -> Text,
        email -> Text,
        search_text -> Text,
        request_id -> Nullable<Text>,
        version -> BigInt,
        create_time -> Timestamp,
        update_time -> Timestamp,
        delete_time -> Nullable<Timestamp>,
        merged_into -> Nullable<BigInt>,
    }
}

diesel::table! {
    customer_tags (customer_id, tag) {
        customer_id -> BigInt,
        tag -> Text,
    }
}

diesel::table! {
    transactions (id) {
        id -> BigInt,
        customer_id -> BigInt,
        order_number -> Text,
        product -> Text,
        currency_code -> Text,
        amount_units -> BigInt,
        amount_nanos -> Integer,
        occur_time -> Timestamp,
        create_time -> Timestamp,
        request_id -> Nullable<Text>,
    }
}

diesel::table! {
    service_tickets (id) {
        id -> BigInt,
        customer_id -> BigInt,
        issue -> Text,
        solution -> Text,
        status -> Integer,
        open_time -> Timestamp,
        resolve_time -> Nullable<Timestamp>,
        create_time -> Timestamp,
        update_time -> Timestamp,
        version -> BigInt,
        request_id -> Nullable<Text>,
    }
}

diesel::table! {
    communications (id) {
        id -> BigInt,
        customer_id -> BigInt,
        channel -> Integer,
        direction -> Integer,
        occur_time -> Timestamp,
        content -> Text,
        outcome -> Text,
        phone_number -> Nullable<Text>,
        call_duration_us -> Nullable<BigInt>,
        email_address -> Nullable<Text>,
        email_subject -> Nullable<Text>,
        chat_platform -> Nullable<Text>,
        chat_conversation_id -> Nullable<Text>,
        create_time -> Timestamp,
        request_id -> Nullable<Text>,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    customers,
    customer_tags,
    transactions,
    service_tickets,
    communications,
);

// @generated automatically by Diesel CLI.

diesel::table! {
    audit_records (id) {
        id -> BigInt,
        record_time -> Timestamp,
        caller -> Text,
        peer -> Text,
        client_certificate -> Text,
        method -> Text,
        customer_id -> BigInt,
        resource_id -> BigInt,
        detail -> Text,
    }
}

diesel::table! {
    business_hours (id) {
        id -> BigInt,
        name -> Text,
        time_zone -> Text,
        hours -> Text,
        request_id -> Nullable<Text>,
        version -> BigInt,
        create_time -> Timestamp,
        update_time -> Timestamp,
    }
}

diesel::table! {
    communication_hours (hour, channel, direction, shard) {
        hour -> BigInt,
        channel -> Integer,
        direction -> Integer,
        shard -> Integer,
        n -> BigInt,
        negative -> BigInt,
        positive -> BigInt,
        sentiment_sum -> BigInt,
    }
}

diesel::table! {
    communication_slots (slot, channel, direction, shard) {
        slot -> BigInt,
        channel -> Integer,
        direction -> Integer,
        shard -> Integer,
        n -> BigInt,
        negative -> BigInt,
        positive -> BigInt,
        sentiment_sum -> BigInt,
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
        sentiment -> Nullable<SmallInt>,
    }
}

diesel::table! {
    customer_merges (id) {
        id -> BigInt,
        customer_id -> BigInt,
        merged_ids -> Text,
        communications_moved -> BigInt,
        transactions_moved -> BigInt,
        service_tickets_moved -> BigInt,
        tags_added -> BigInt,
        tags_dropped -> BigInt,
        request_id -> Nullable<Text>,
        merge_time -> Timestamp,
    }
}

diesel::table! {
    customer_months (month, customer_id) {
        month -> Integer,
        customer_id -> BigInt,
        n -> BigInt,
        last_time -> Timestamp,
        negative -> BigInt,
        positive -> BigInt,
        sentiment_sum -> BigInt,
    }
}

diesel::table! {
    customer_tags (customer_id, tag) {
        customer_id -> BigInt,
        tag -> Text,
    }
}

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
    deleted_communications (id) {
        id -> BigInt,
        delete_time -> Timestamp,
    }
}

diesel::table! {
    rollup_state (name) {
        name -> Text,
        built_time -> Timestamp,
    }
}

diesel::table! {
    satisfaction_surveys (id) {
        id -> BigInt,
        customer_id -> BigInt,
        communication_id -> Nullable<BigInt>,
        ticket_id -> Nullable<BigInt>,
        channel -> Integer,
        target_time -> Timestamp,
        sent_time -> Timestamp,
        score -> Integer,
        comment -> Text,
        answer_time -> Nullable<Timestamp>,
        create_time -> Timestamp,
        update_time -> Timestamp,
        version -> BigInt,
        request_id -> Nullable<Text>,
        answer_request_id -> Nullable<Text>,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        value -> Text,
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

diesel::allow_tables_to_appear_in_same_query!(
    audit_records,
    business_hours,
    communication_hours,
    communication_slots,
    communications,
    customer_merges,
    customer_months,
    customer_tags,
    customers,
    deleted_communications,
    rollup_state,
    satisfaction_surveys,
    server_secrets,
    service_tickets,
    transactions,
);

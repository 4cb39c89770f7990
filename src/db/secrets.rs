//! Secrets every server of a deployment shares (`server_secrets`): made at random by the
//! first server that needs one, read by every other, so replicas agree without any setting.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::server_secrets;
use super::Db;
use crate::error::{Error, Result};
use crate::with_conn;

/// The name of the key that seals page tokens holding personal data.
const PAGE_TOKEN_KEY: &str = "page_token_key/1";
/// The name of the database's identity.
const DATABASE_ID: &str = "database_id/1";

/// The 32-byte key that seals page tokens holding personal data (see
/// `grpc::paging::encode_sealed`); made on first use. A server racing another to make
/// it loses the primary-key race and reads the winner's.
pub async fn page_token_key(db: &Db) -> Result<[u8; 32]> {
    stored_or_new(db, PAGE_TOKEN_KEY).await
}

/// 32 random bytes made once per database (on first use): what tells this database
/// from any other, e.g. for a content index snapshot. Not a key.
pub async fn database_id(db: &Db) -> Result<[u8; 32]> {
    stored_or_new(db, DATABASE_ID).await
}

/// The 32-byte secret `name`, made at random on first use.
async fn stored_or_new(db: &Db, name: &str) -> Result<[u8; 32]> {
    if let Some(key) = read(db, name).await? {
        return parse(&key);
    }
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| Error::Internal(format!("no OS randomness: {e}")))?;
    let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
    let inserted = with_conn!(db, write, |conn| {
        Ok::<_, Error>(
            diesel::insert_into(server_secrets::table)
                .values((
                    server_secrets::name.eq(name),
                    server_secrets::value.eq(&hex),
                ))
                .execute(conn)
                .await?,
        )
    });
    match inserted {
        Ok(_) => Ok(fresh),
        Err(e) if e.is_unique_violation() => match read(db, name).await? {
            Some(key) => parse(&key),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The stored secret `name`.
async fn read(db: &Db, name: &str) -> Result<Option<String>> {
    with_conn!(db, |conn| {
        Ok::<_, Error>(
            server_secrets::table
                .filter(server_secrets::name.eq(name))
                .select(server_secrets::value)
                .first::<String>(conn)
                .await
                .optional()?,
        )
    })
}

/// A stored key: 64 hex digits.
fn parse(hex: &str) -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(Error::Internal("a stored secret is malformed".into()));
    }
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).unwrap_or("");
        key[i] = u8::from_str_radix(text, 16)
            .map_err(|_| Error::Internal("a stored secret is malformed".into()))?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_reads_back_and_malformed_ones_are_refused() {
        let hex: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        let key = parse(&hex).unwrap();
        assert_eq!(key[31], 31);
        assert!(parse("00").is_err());
        assert!(parse(&"zz".repeat(32)).is_err());
    }
}

//! The HPKE key pairs of sealed uploads (table `sealed_keys`, PROTOCOL.md §16): shared by
//! every node of a deployment, rotated by whichever node finds a rotation due, one node at
//! a time (the single SQLite writer, or a transaction-scoped advisory lock on PostgreSQL,
//! which needs no privilege beyond the table's rows).

use sqlx::Row;
use zeroize::Zeroizing;

use super::{to_i64, to_u64, BeginWrite, Db, DbError, DbResult};

/// One stored key pair.
#[derive(Clone)]
pub struct SealedKeyRow {
    /// The published key id (first 8 bytes of SHA-256 of the public key).
    pub key_id: Vec<u8>,
    /// The X25519 secret.
    pub secret: Zeroizing<[u8; 32]>,
    /// Unix seconds after which phones no longer seal to it.
    pub expires_at: u64,
}

impl std::fmt::Debug for SealedKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKeyRow")
            .field("key_id", &self.key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Any constant: the advisory lock that serialises rotations on PostgreSQL.
const ROTATION_LOCK: i64 = 0x6470_3374_7365_616c;

const INSERT: &str = "INSERT INTO sealed_keys (key_id, secret, expires_at) VALUES ($1, $2, $3) \
     ON CONFLICT (key_id) DO NOTHING";

impl Db {
    /// Rotate the sealed-upload keys at one node's request, in one transaction serialised
    /// between nodes: delete the keys whose grace ended (`expires_at + grace <= now`),
    /// insert `candidate` if no remaining key expires after `fresh_after`, and return
    /// every key left, newest first. `import` (keys of a node's old key file) are inserted
    /// first, unless present.
    pub async fn rotate_sealed_keys(
        &self,
        grace_cutoff: u64,
        fresh_after: u64,
        candidate: &SealedKeyRow,
        import: &[SealedKeyRow],
    ) -> DbResult<Vec<SealedKeyRow>> {
        let cutoff = to_i64(grace_cutoff)?;
        let fresh = to_i64(fresh_after)?;
        let mut to_insert = Vec::with_capacity(import.len());
        for k in import {
            to_insert.push((
                k.key_id.clone(),
                Zeroizing::new(k.secret.to_vec()),
                to_i64(k.expires_at)?,
            ));
        }
        let new = (
            candidate.key_id.clone(),
            Zeroizing::new(candidate.secret.to_vec()),
            to_i64(candidate.expires_at)?,
        );
        let postgres = matches!(self, Db::Postgres(_));
        let rows = on_write!(self, p => {
            let mut tx = p.begin_write().await?;
            if postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(ROTATION_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            for (id, secret, expires) in &to_insert {
                sqlx::query(INSERT).bind(id).bind(secret.as_slice()).bind(expires).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM sealed_keys WHERE expires_at <= $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM sealed_keys WHERE expires_at > $1")
                .bind(fresh)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if n == 0 {
                sqlx::query(INSERT).bind(&new.0).bind(new.1.as_slice()).bind(new.2).execute(&mut *tx).await?;
            }
            let rows = sqlx::query(
                "SELECT key_id, secret, expires_at FROM sealed_keys ORDER BY expires_at DESC",
            )
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            rows.iter().map(|r| {
                let secret = Zeroizing::new(r.try_get::<Vec<u8>, _>(1)?);
                let secret: [u8; 32] = secret
                    .as_slice()
                    .try_into()
                    .map_err(|_| DbError::Corrupt("sealed key secret is not 32 bytes"))?;
                Ok(SealedKeyRow {
                    key_id: r.try_get(0)?,
                    secret: Zeroizing::new(secret),
                    expires_at: to_u64(r.try_get(2)?)?,
                })
            }).collect::<DbResult<Vec<_>>>()?
        });
        Ok(rows)
    }
}

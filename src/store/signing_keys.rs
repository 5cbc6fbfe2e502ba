//! The session-token signing keys (sealed private keys; see `tokens`).

use time::OffsetDateTime;

use super::limits::lock_all;
use super::stmt::Stmt;
use super::tx::Unit;
use super::Store;

/// A stored key: its id and sealed PKCS#8 private key.
#[derive(Debug, Clone)]
pub struct StoredSigningKey {
    pub kid: String,
    pub private_sealed: Vec<u8>,
}

impl Store {
    /// The keys in force, newest first; stores `generated` first if there is none, so that
    /// instances starting together agree on one key (the first start's).
    pub async fn signing_keys_or_create(
        &self,
        generated: StoredSigningKey,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<StoredSigningKey>> {
        self.write(move |tx| {
            Box::pin(async move {
                lock_all(tx, &[], &["signing_keys"]).await?;
                let live = "SELECT kid, private_sealed FROM signing_keys WHERE retired_at IS NULL \
                            ORDER BY created_at DESC, kid";
                let mut rows = tx.fetch_all(Stmt::new(live, vec![])).await?;
                if rows.is_empty() {
                    tx.execute(Stmt::new(
                        "INSERT INTO signing_keys (kid, alg, private_sealed, created_at) VALUES ($1, 'EdDSA', $2, $3)",
                        vec![
                            generated.kid.as_str().into(),
                            generated.private_sealed.as_slice().into(),
                            now.into(),
                        ],
                    ))
                    .await?;
                    rows = tx.fetch_all(Stmt::new(live, vec![])).await?;
                }
                let keys = rows
                    .iter()
                    .map(|r| {
                        Ok(StoredSigningKey {
                            kid: r.text("kid")?,
                            private_sealed: r.opt_blob("private_sealed")?.unwrap_or_default(),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Unit::Commit(keys))
            })
        })
        .await
    }
}

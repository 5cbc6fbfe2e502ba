use super::stmt::Stmt;
use super::tx::Unit;
use super::Store;

impl Store {
    /// Returns the server secret stored in the database, storing `generated` first if there is
    /// none. Instances starting together agree on one value: the first insert wins.
    pub async fn get_or_create_secret(&self, generated: &str) -> anyhow::Result<String> {
        let generated = generated.to_string();
        self.write(move |tx| {
            Box::pin(async move {
                tx.execute(Stmt::new(
                    "INSERT INTO server_settings (key, value) VALUES ('secret', $1) ON CONFLICT (key) DO NOTHING",
                    vec![generated.into()],
                ))
                .await?;
                let row = tx
                    .fetch_one(Stmt::new(
                        "SELECT value FROM server_settings WHERE key = 'secret'",
                        vec![],
                    ))
                    .await?;
                Ok(Unit::Commit(row.text("value")?))
            })
        })
        .await
    }
}

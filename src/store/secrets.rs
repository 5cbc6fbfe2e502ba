use super::Store;

impl Store {
    /// Returns the server secret stored in the database, storing `generated` first if there is
    /// none. Instances starting together agree on one value: the first insert wins.
    pub async fn get_or_create_secret(&self, generated: &str) -> anyhow::Result<String> {
        sqlx::query("INSERT INTO server_settings (key, value) VALUES ('secret', $1) ON CONFLICT (key) DO NOTHING")
            .bind(generated)
            .execute(&self.writer)
            .await?;
        let value: String =
            sqlx::query_scalar("SELECT value FROM server_settings WHERE key = 'secret'")
                .fetch_one(&self.writer)
                .await?;
        Ok(value)
    }
}

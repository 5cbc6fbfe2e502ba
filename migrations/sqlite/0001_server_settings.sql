-- Values generated once and shared by every instance, such as the server secret.
CREATE TABLE server_settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

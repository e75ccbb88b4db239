//! A fresh PostgreSQL database per test, dropped when the test passes.
//!
//! The server comes from `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); its user must be allowed to create
//! databases. When the server is not reachable, the test fails with one message that says
//! what to start.

use std::time::Duration;

mod proxy;

pub use proxy::Proxy;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Where the tests find PostgreSQL when `TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's name (`es_test_…`).
    pub name: String,
    /// The URL of the database, for child processes.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
    admin: PgConnectOptions,
}

/// The server URL the tests use.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

impl TestDatabase {
    /// Creates an empty database with a unique name and a pool of up to `max_connections`.
    ///
    /// # Panics
    /// When the server cannot be reached or the database cannot be created: this is test
    /// set-up, and the message says what to start.
    pub async fn create(max_connections: u32) -> Self {
        let server = server_url();
        let admin: PgConnectOptions = server
            .parse()
            .unwrap_or_else(|e| panic!("TEST_DATABASE_URL={server} is not a PostgreSQL URL: {e}"));
        let admin = admin.log_statements(tracing::log::LevelFilter::Off);
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {server} ({e}). Start it with \
                 `scripts/ensure-postgres` (or `pg_ctlcluster --skip-systemctl-redirect \
                 $(ls /etc/postgresql) main start`), or set TEST_DATABASE_URL."
                )
            });
        let name = format!("es_test_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = conn.close().await;

        let options = admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
        let url = with_database(&server, &name);
        Self {
            name,
            url,
            pool,
            admin,
        }
    }

    /// Closes the pool and drops the database (even if other sessions are still connected).
    pub async fn drop_database(self) {
        self.pool.close().await;
        if let Ok(mut conn) = PgConnection::connect_with(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}

/// `url` with its database path replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..authority_end], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}

//! The engine refuses anything but queries, and reports bad SQL as the client's error.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use query::Error;

use crate::common::Fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_change_anything_are_refused() {
    let fx = Fixture::new();
    fx.write_meters().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let copy_target = dir.path().join("copy.csv");
    let statements = [
        "CREATE TABLE t (x INT)".to_owned(),
        "CREATE TABLE t AS SELECT * FROM meter".to_owned(),
        "CREATE VIEW v AS SELECT 1".to_owned(),
        format!(
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}'",
            copy_target.display()
        ),
        "INSERT INTO meter (time, power) VALUES (now(), 1.0)".to_owned(),
        "DELETE FROM meter".to_owned(),
        "UPDATE meter SET power = 1.0".to_owned(),
        "DROP TABLE meter".to_owned(),
        format!("COPY meter TO '{}'", copy_target.display()),
        format!("COPY (SELECT 1) TO '{}'", copy_target.display()),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "PREPARE q AS SELECT 1".to_owned(),
    ];
    for sql in &statements {
        let error = fx.engine.sql(sql).await.expect_err(sql);
        assert!(matches!(error, Error::Refused(_)), "{sql}: {error:?}");
        assert!(error.is_client_error(), "{sql}");
        assert!(
            error.to_string().starts_with("only read-only queries"),
            "{sql}: {error}"
        );
    }
    assert!(!copy_target.exists(), "COPY wrote a file");
    assert_eq!(fx.count("SELECT * FROM meter").await, 10);
    let tables = fx
        .rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        .await;
    assert_eq!(tables.len(), 1, "{tables:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_is_a_client_error_with_datafusions_message() {
    let fx = Fixture::new();
    fx.write_meters().await;
    let cases = [
        ("SELEC 1", "SQL error"),
        ("SELECT * FROM nope", "nope"),
        ("SELECT nope FROM meter", "nope"),
        ("SELECT power + 'x' FROM meter", "Cannot coerce"),
        ("BEGIN TRANSACTION", "Unsupported SQL statement"),
        ("SELECT 1 / 0", "Divide by zero"),
        ("SELECT 1; SELECT 2", "single SQL statement"),
    ];
    for (sql, needle) in cases {
        let error = fx.engine.sql(sql).await.expect_err(sql);
        assert!(error.is_client_error(), "{sql}: {error:?}");
        assert!(!error.is_timeout(), "{sql}");
        let message = error.to_string();
        assert!(message.contains(needle), "{sql}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_counted_by_outcome() {
    let fx = Fixture::new();
    fx.write_meters().await;
    let mut registry = Registry::default();
    fx.engine.register_metrics(&mut registry);
    fx.count("SELECT * FROM meter").await;
    fx.count("SELECT 1").await;
    fx.engine
        .sql("SELECT * FROM nope")
        .await
        .expect_err("unknown table");
    fx.engine
        .sql("DROP TABLE meter")
        .await
        .expect_err("refused");
    fx.engine
        .sql("SELECT 1 / 0")
        .await
        .expect_err("division by zero");

    let mut text = String::new();
    encode(&mut text, &registry).expect("encode metrics");
    assert!(
        text.contains("gridlake_queries_total{outcome=\"ok\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("gridlake_queries_total{outcome=\"client_error\"} 3"),
        "{text}"
    );
    assert!(text.contains("gridlake_query_seconds_count 5"), "{text}");
}

-- The table the clickhouse sink writes (docs/clickhouse.md explains each choice). Runs on
-- ClickHouse 18.16 and later; tests/tests/clickhouse_sink.rs creates it from this file.
-- Replace `logs` with the sink's `table:`.
CREATE TABLE IF NOT EXISTS logs
(
    id                        String,
    source_file               String,
    collected_at              DateTime('UTC'),
    collected_at_ms           Int64,
    timestamp                 String,
    log_level                 String,
    log_category              String,
    message                   String,
    stream                    String,
    kubernetes_namespace      String,
    kubernetes_pod_name       String,
    kubernetes_container_name String,
    kubernetes_node_name      String,
    fields                    String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(collected_at)
ORDER BY id

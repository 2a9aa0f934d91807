//! A transactional producer (Kafka's KIP-98 client side, as far as `runnel mirror`
//! needs it): InitProducerId with a transactional id (fencing an older instance and
//! aborting its open transaction), AddPartitionsToTxn before a partition's first batch
//! in a transaction, transactional batches with per-partition sequences, EndTxn.
//!
//! One transaction at a time; not thread-safe (`&mut self`).

use std::collections::{BTreeSet, HashMap};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{now_ms, ProduceAck, ProduceOptions};
use crate::error::{Error, Result};
use crate::records::{encode_batch_as, ProducerIdentity, ProducerRecord};
use crate::{Client, Compression, Connection};

const ADD_PARTITIONS_TO_TXN: i16 = 3;
const END_TXN: i16 = 3;

pub struct TransactionalProducer {
    client: Client,
    id: String,
    coordinator: Connection,
    producer_id: i64,
    producer_epoch: i16,
    sequences: HashMap<(String, i32), i32>,
    /// Partitions added to the open transaction.
    in_txn: BTreeSet<(String, i32)>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Retries `op` while the coordinator answers a retriable error (CONCURRENT_TRANSACTIONS
/// while it aborts an older instance's transaction, COORDINATOR_LOAD_IN_PROGRESS), up to
/// about 30 s.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            // CONCURRENT_TRANSACTIONS is not a retriable error in Kafka's table, but its
            // producer retries it (the previous transaction's markers are still being
            // written), and so do we.
            Err(e) if (e.is_retriable() || e.is_concurrent_transactions()) && attempt < 300 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

impl TransactionalProducer {
    /// Registers `id` with its transaction coordinator: an older producer with the same
    /// id is fenced and its open transaction aborted before this returns.
    pub async fn init(client: &Client, id: &str, timeout_ms: i32) -> Result<Self> {
        let coordinator = client.transaction_coordinator(id).await?;
        let response = retrying(|| async {
            let request = InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(sb(id))))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let r = coordinator
                .send(&request, crate::versions::INIT_PRODUCER_ID)
                .await?;
            Error::check(
                r.error_code,
                || format!("InitProducerId for transactional id {id}"),
                None,
            )?;
            Ok(r)
        })
        .await?;
        Ok(TransactionalProducer {
            client: client.clone(),
            id: id.to_string(),
            coordinator,
            producer_id: response.producer_id.0,
            producer_epoch: response.producer_epoch,
            sequences: HashMap::new(),
            in_txn: BTreeSet::new(),
        })
    }

    /// Writes `records` to `topic`/`partition` inside the open transaction (begun by the
    /// first send after `commit`).
    pub async fn send(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[ProducerRecord],
        options: &ProduceOptions,
    ) -> Result<ProduceAck> {
        let tp = (topic.to_string(), partition);
        if !self.in_txn.contains(&tp) {
            self.add_partition(topic, partition).await?;
            self.in_txn.insert(tp.clone());
        }
        let sequence = self.sequences.get(&tp).copied().unwrap_or(0);
        let producer = ProducerIdentity {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: sequence,
        };
        let batch = encode_batch_as(records, Compression::None, Some(producer), now_ms(), true)?;
        let ack = self
            .client
            .produce_batch_in(topic, partition, batch, options, Some(&self.id))
            .await?;
        self.sequences
            .insert(tp, sequence.wrapping_add(records.len() as i32));
        Ok(ack)
    }

    async fn add_partition(&self, topic: &str, partition: i32) -> Result<()> {
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(sb(&self.id)))
            .with_v3_and_below_producer_id(ProducerId(self.producer_id))
            .with_v3_and_below_producer_epoch(self.producer_epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(sb(topic)))
                .with_partitions(vec![partition])]);
        retrying(|| async {
            let r = self
                .coordinator
                .send(&request, ADD_PARTITIONS_TO_TXN)
                .await?;
            for t in &r.results_by_topic_v3_and_below {
                for p in &t.results_by_partition {
                    Error::check(
                        p.partition_error_code,
                        || format!("add {topic}/{partition} to transaction {}", self.id),
                        None,
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Commits (`commit` true) or aborts the open transaction; nothing to do when no
    /// record was sent since the last one.
    pub async fn end(&mut self, commit: bool) -> Result<()> {
        if self.in_txn.is_empty() {
            return Ok(());
        }
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(sb(&self.id)))
            .with_producer_id(ProducerId(self.producer_id))
            .with_producer_epoch(self.producer_epoch)
            .with_committed(commit);
        retrying(|| async {
            let r = self.coordinator.send(&request, END_TXN).await?;
            Error::check(
                r.error_code,
                || format!("EndTxn for transactional id {}", self.id),
                None,
            )
        })
        .await?;
        self.in_txn.clear();
        Ok(())
    }
}

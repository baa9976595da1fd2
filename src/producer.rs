//! The producing side shared by `replay`, `produce-sample` and the benchmark.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

/// Enqueues a record, waiting while librdkafka's local queue is full (backpressure rather than
/// an error); any other error is returned.
pub fn send_blocking<'a, K, P, C>(producer: &ThreadedProducer<C>, mut rec: BaseRecord<'a, K, P, C::DeliveryOpaque>) -> Result<(), KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: ProducerContext + 'static,
{
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                // The background thread drains the queue; a short sleep avoids spinning.
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

//! The class of the Kafka edge's errors, decided from librdkafka's codes:
//! authentication, authorization and client settings are the operator's
//! to fix; a broker's refusal of a record is final; the rest (brokers down,
//! timeouts, leaders moving) passes with time.

use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};

use crate::pipeline::error::{Classify, ErrorClass};

/// The class of a librdkafka error.
pub fn class_of(e: &KafkaError) -> ErrorClass {
    match e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => return ErrorClass::Config,
        _ => {}
    }
    match e.rdkafka_error_code() {
        Some(
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::SSL
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::DelegationTokenAuthorizationFailed
            | C::InvalidConfig
            | C::InvalidArgument,
        ) => ErrorClass::Config,
        Some(C::MessageSizeTooLarge | C::InvalidRecord | C::Fatal) => ErrorClass::Rejected,
        _ => ErrorClass::Transient,
    }
}

impl Classify for KafkaError {
    fn class(&self) -> ErrorClass {
        class_of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_refusals_are_not_worth_a_retry() {
        let global = |c| KafkaError::Global(c);
        assert_eq!(
            global(C::SaslAuthenticationFailed).class(),
            ErrorClass::Config
        );
        assert_eq!(
            global(C::TopicAuthorizationFailed).class(),
            ErrorClass::Config
        );
        assert_eq!(
            KafkaError::MessageProduction(C::MessageSizeTooLarge).class(),
            ErrorClass::Rejected
        );
        assert_eq!(global(C::AllBrokersDown).class(), ErrorClass::Transient);
        assert_eq!(
            KafkaError::MessageProduction(C::MessageTimedOut).class(),
            ErrorClass::Transient
        );
        assert!(global(C::BrokerTransportFailure).class().retry_helps());
    }
}

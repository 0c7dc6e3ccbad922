//! Whether trying again can help: the class the service's errors carry,
//! decided at the edge where the error is born, so that callers can decide
//! by class and never by matching message text. (Today dependency failures
//! log their class; the loop still retries every failure.)

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A dependency is unavailable, slow or full: waiting and trying again
    /// can help.
    Transient,
    /// The configuration or credentials are wrong: the operator must fix
    /// them; trying again cannot help.
    Config,
    /// Data cannot be read (corrupt stored state, a record that cannot be
    /// decoded): trying again reads the same bytes.
    Corrupt,
    /// A dependency refused the request for good (authorization, a record
    /// too large, an unknown topic).
    Rejected,
}

impl ErrorClass {
    /// Whether a retry can succeed.
    pub fn retry_helps(self) -> bool {
        self == Self::Transient
    }

    /// The class's name (for logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Config => "config",
            Self::Corrupt => "corrupt",
            Self::Rejected => "rejected",
        }
    }
}

/// An error that knows its class.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

/// An error that can be shown and knows its class (for logs and events).
pub trait Failure: std::fmt::Display + Classify {}

impl<T: std::fmt::Display + Classify> Failure for T {}

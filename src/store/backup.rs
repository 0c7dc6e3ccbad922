//! A second copy of the committed customer states (the changelog, in the
//! service: [`crate::kafka::changelog::ChangelogBackup`]), read again when
//! a stored state is corrupt.

use crate::pipeline::error::Failure;
use crate::pipeline::features::CustomerState;

/// Why the backup could not be read; its class says whether trying again
/// can help.
pub type BackupError = Box<dyn Failure + Send + Sync>;

/// A second copy of the committed customer states.
pub trait StateBackup: Send + Sync {
    /// The customer's state as of the partition's last commit, whose
    /// changelog position is `upto`; `Ok(None)` when the copy has none.
    fn committed(
        &self,
        partition: i32,
        customer: &str,
        upto: i64,
    ) -> Result<Option<CustomerState>, BackupError>;
}

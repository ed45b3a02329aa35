//! Placeholder for the labels branch's accessor, so maintenance can select
//! hosts by label before that branch lands (the lead drops this file).

use super::{Monitor, Slot};
use crate::labels::Labels;
use std::sync::LazyLock;

static NONE: LazyLock<Labels> = LazyLock::new(Labels::new);

impl Monitor {
    /// The labels of the host in `slot` (none until the labels branch).
    pub fn labels_of(&self, _slot: Slot) -> &Labels {
        &NONE
    }
}

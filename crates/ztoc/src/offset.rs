//! Newtypes that keep positions in the compressed blob and in the uncompressed tar stream apart.

use std::fmt;
use std::ops::{Add, Sub};

macro_rules! offset_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw byte count.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl Add<u64> for $name {
            type Output = $name;
            fn add(self, rhs: u64) -> $name {
                $name(self.0 + rhs)
            }
        }

        impl Sub for $name {
            type Output = u64;
            fn sub(self, rhs: $name) -> u64 {
                self.0 - rhs.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

offset_newtype!(
    /// A byte position (or size) in the compressed layer blob as stored in the registry.
    CompressedOffset
);
offset_newtype!(
    /// A byte position (or size) in the uncompressed tar stream of a layer.
    UncompressedOffset
);

//! `telemetry` owns what glasswire tells its operator while it runs: counters declared
//! once next to their description (so the stats socket, the docs and the code cannot
//! drift apart) and the local stats socket that serves them as JSON. It knows nothing of
//! packets: the data path bumps counters, and whoever starts the socket decides what
//! snapshot it serves.

mod counter;
mod socket;

pub use counter::Counter;
pub use socket::{fetch, StatsServer};

/// Declares a set of counters: a struct of [`Counter`]s, each documented, with a
/// `FIELDS` table of (name, description) and a `snapshot` into a JSON object.
#[macro_export]
macro_rules! counter_set {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[doc = $doc:literal])+ $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $($(#[doc = $doc])+ pub $field: $crate::Counter,)*
        }

        impl $name {
            /// Each counter's name and what it counts.
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), concat!($($doc),+)),)*];

            pub fn snapshot(&self) -> ::serde_json::Map<String, ::serde_json::Value> {
                let mut m = ::serde_json::Map::new();
                $(m.insert(stringify!($field).to_string(), self.$field.get().into());)*
                m
            }
        }
    };
}

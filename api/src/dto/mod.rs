//! Request and response bodies, one module per resource, and their conversion to and
//! from domain types.
//!
//! Input DTOs (`XxxIn`, `XxxPatch`) are parsed into domain values here, with each
//! validation error naming the field as the client wrote it (`target.url`). Their
//! `validator(...)` attributes state the documented limits in the OpenAPI document;
//! the request check (`crate::validate`) enforces them before a handler runs, and the
//! domain's own parsers check them again. Output DTOs (`XxxOut`) are built from domain
//! values. Optional output fields are omitted when empty rather than sent as `null`,
//! which generated clients handle badly.
//!
//! Modules depend only downwards (`webhooks` uses `jobs::Environment`; `deliveries` and
//! `dlq` use `webhooks::WebhookEvent`), never on each other in a circle.

/// Declares an API enum mirroring a domain enum, with conversions both ways.
macro_rules! mirror_enum {
    ($(#[$doc:meta])* $name:ident => $domain:path { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
        #[oai(rename_all = "snake_case")]
        pub(crate) enum $name { $($variant),+ }
        impl From<$name> for $domain {
            fn from(v: $name) -> Self { match v { $($name::$variant => <$domain>::$variant),+ } }
        }
        impl From<$domain> for $name {
            fn from(v: $domain) -> Self { match v { $(<$domain>::$variant => $name::$variant),+ } }
        }
    };
}
pub(crate) mod deliveries;
pub(crate) mod dlq;
pub(crate) mod events;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod runs;
pub(crate) mod webhooks;

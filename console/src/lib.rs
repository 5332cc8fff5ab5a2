//! The console: broker link ingest, presence, the sled store and the REST API.

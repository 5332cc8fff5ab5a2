//! REST request and response types shared by the console and the web UI.

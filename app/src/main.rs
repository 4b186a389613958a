//! The Data Hub web app.
fn main() {}

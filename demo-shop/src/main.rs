//! The demo shop: orders, inventory and payments with a checkout process.

fn main() {}

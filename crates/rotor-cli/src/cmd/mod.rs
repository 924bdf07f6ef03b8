//! One module per command group, built on [`crate::session`]. Only `mk` reaches into another
//! command's module: `mk rotate` is the rotation in [`rotate`].

pub mod admins;
pub mod apikeys;
pub mod audit;
pub mod auto;
pub mod dev;
pub mod login;
pub mod mk;
pub mod parts;
pub mod pki;
pub mod replicas;
pub mod rotate;
pub mod run;
pub mod sigkeys;
pub mod thresholds;
pub mod units;

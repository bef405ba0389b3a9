pub mod canary;
pub mod idp;
pub mod mailstack;
pub mod receiver;

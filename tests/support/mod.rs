pub mod canary;
pub mod mailstack;

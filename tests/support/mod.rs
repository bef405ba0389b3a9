pub mod canary;
pub mod mailstack;
pub mod receiver;
pub mod formsite;

pub mod canary;
pub mod formsite;
pub mod mailstack;
pub mod receiver;

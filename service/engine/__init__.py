"""The inference engine: slots, a continuous-batching scheduler loop on one thread, sampling."""

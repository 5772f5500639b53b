"""The sync engine (engine.py) drives a connector through c1.connector.v2 and writes a c1z through its
store (store.py), which may run in a child process. Nothing is imported here, so that the store's child
process loads only what storing needs."""

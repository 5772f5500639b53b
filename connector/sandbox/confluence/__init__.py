"""A fake Confluence Data Center server for tests, the demo and the benchmark."""

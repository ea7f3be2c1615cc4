"""hypothesis strategies of random valid graphs, for testing your own topologies and tools."""

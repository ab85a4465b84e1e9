"""Developer tools: the fixture builder (`tools.fixtures`) and, later, benchmarks."""

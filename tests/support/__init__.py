"""Local stand-ins for the services Switchboard talks to, used by the tests, the demo and the benchmarks."""

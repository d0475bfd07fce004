"""kassad.simulators: device simulators and the scripted POS the demo and the tests run against."""

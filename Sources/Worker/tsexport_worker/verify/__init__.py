"""The verify_bundle op: reload a bundle's artifacts and compare them with its recorded reference outputs."""

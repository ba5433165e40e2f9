"""The emulated AWS side of the local stack (moto made as strict as AWS where it matters)."""

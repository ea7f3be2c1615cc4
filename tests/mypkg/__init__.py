"""A user's own package, as the command-line tests import it: ``tnpeft draw mypkg.topos:ttlora …``."""

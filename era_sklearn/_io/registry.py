"""Classes a saved file may name, by stable names.

A file records a solver object or a dataclass by a name (``"era_sklearn.align.Procrustes"``)
and the reader builds it only if that name is registered here: no module path read from
a file is ever imported, so moving a class to another module does not break old files
(the old name stays an alias) and a hostile file cannot make the reader import anything.
"""


class ClassRegistry:
    """Stable name <-> class, with aliases for names that earlier versions wrote.

    Parameters
    ----------
    classes : dict of str to class, default=None
        Each class under the name files are written with.
    aliases : dict of str to class, default=None
        Further names (read only): what older files wrote for a class that has moved.
    hint : str, default=""
        How a user registers a class of their own; error messages end with it.
    """

    def __init__(self, classes=None, aliases=None, hint=""):
        self.hint = hint
        self._classes = {}  # every readable name (aliases included) -> class
        self._names = {}  # class -> the name files are written with
        for name, cls in (classes or {}).items():
            self.register(cls, name)
        for name, cls in (aliases or {}).items():
            self._classes[name] = cls

    def register(self, cls, name=None):
        """Add ``cls`` under ``name`` (default: its module and qualified name).

        Registering the same pair again changes nothing, and a class defined again
        (same module and qualified name: a re-run notebook cell or doctest) takes
        its predecessor's place; any other clash is an error.
        """
        if not isinstance(cls, type):
            raise TypeError(f"Only classes can be registered, not {cls!r}.")
        name = default_name(cls) if name is None else name
        if not isinstance(name, str) or "." not in name.strip("."):
            raise ValueError(f"A registered name must be a dotted string such as "
                             f"'package.Class', not {name!r}.")
        taken = self._classes.get(name)
        if taken is not None and default_name(taken) == default_name(cls):
            self._names.pop(taken, None)  # redefined: the new class replaces the old one
        elif taken is not None and taken is not cls:
            raise ValueError(f"The name {name!r} is already registered for {default_name(taken)}; "
                             f"register {cls.__qualname__} under another name.")
        known = self._names.get(cls)
        if known is not None and known != name:
            raise ValueError(f"{default_name(cls)} is already registered as {known!r}.")
        self._classes[name] = cls
        self._names[cls] = name
        return cls

    def name_of(self, cls):
        """The name files record for exactly ``cls`` (not a subclass), or None."""
        return self._names.get(cls)

    def resolve(self, name):
        """The class registered under ``name`` (or an alias), or None."""
        return self._classes.get(name)


def default_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"

"""``python -m actors.notifications._delivery_child``: the delivery child process's entry point
(:mod:`actors.notifications._delivery`; a module of its own so that ``-m`` does not run a module
the package already imported)."""

from actors.notifications._delivery import main

if __name__ == "__main__":
    main()

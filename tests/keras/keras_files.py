"""What both Python checkers of Keras files share: the file signatures, and
reading Keras's string attributes, names and sizes as Keras itself does.
Imported by reference_check.py and check_structure.py after they have made
sure numpy is there (they exit 77, ctest's skip code, when it is not)."""

import re

import numpy as np

SKIP = 77
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def decode(value):
    """UTF-8 text from bytes (h5py gives fixed-length strings as bytes); anything else as it is."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    return value


def attribute_chunks(group, name):
    """The raw arrays of a string-list attribute as Keras's
    load_attributes_from_hdf5_group finds it: `name`, or the chunks `name0`,
    `name1`, ... it splits lists longer than 64 KB into. None when absent."""
    if name in group.attrs:
        return [group.attrs[name]]
    chunks = []
    while f"{name}{len(chunks)}" in group.attrs:
        chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return chunks or None


def chunk_items(chunk):
    """The items of one chunk: an empty list is stored as an empty float64
    array, and a lone string would come back as a scalar."""
    return np.atleast_1d(np.asarray(chunk, dtype=object))


def snake_case(class_name):
    """keras/src/utils/naming.py to_snake_case: the stem of .keras weight paths."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def pair(value):
    """Keras's int-or-pair arguments (kernel_size=3 or [3, 3])."""
    return (value, value) if isinstance(value, int) else tuple(value)

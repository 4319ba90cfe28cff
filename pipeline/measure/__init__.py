"""Node measurements on masks on the CT grid: nodes as components (``components``), measured
(``nodes``: volume, centroid, RECIST axes from ``recist`` and ``batch``, 3D diameter from
``diameter3d``, on the sub-pixel boundary of ``boundary`` and ``feret``), their RECIST category
(``categories``) and quality flag (``quality``), and a series' node burden (``burden``).

Modules are imported by name, so that importing one does not import all of them.
"""

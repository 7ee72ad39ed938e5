"""The engine: the loop that drives scan -> risk -> execute -> exits (``loop``), what it reports to
its observers (``hooks``) and the manual control an operator has over it (``manual``)."""

"""PS3.15 Annex E, Table E.1-1 ("Application Level Confidentiality Profile Attributes") as
data: for each attribute, the action of the Basic Application Level Confidentiality Profile and
the options of Table E.1-1 that cohortseg implements which retain or clean it.

Actions (PS3.15 E.1.1): ``X`` remove; ``Z`` replace with a zero-length value (or a dummy where
the attribute is Type 1); ``D`` replace with a non-zero-length dummy value; ``U`` replace the UID
with another, consistent within the set of instances; ``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``: as
the attribute's type in the IOD requires; ``X/Z/U*``: a sequence of references whose UIDs are
replaced. Option letters: ``L`` kept by Retain Longitudinal Temporal Information (Full Dates:
kept as they are; Modified Dates: shifted); ``P`` kept by Retain Patient Characteristics; ``C``
cleaned by Clean Descriptors; ``U`` kept by Retain UIDs. Options the table names that cohortseg
does not implement (device and institution identity, safe private attributes, graphics,
structured content) are left out: their attributes get the basic action.

Transcribed from the 2025 edition of the standard (617 attributes; the rows for private
attributes, curves and overlays are rules in :mod:`cohortseg.dicom.deidentify`, not rows here),
through the machine-readable rendering of innolitics/dicom-standard
(``standard/confidentiality_profile_attributes.json``).
"""

from __future__ import annotations

#: tag → (basic profile action, option letters); the comment is the attribute's name.
TABLE_E1_1: dict[int, tuple[str, str]] = {
    0x00001000: ("X", "U"),  # Affected SOP Instance UID
    0x00001001: ("U", "U"),  # Requested SOP Instance UID
    0x00020003: ("U", "U"),  # Media Storage SOP Instance UID
    0x00041511: ("U", "U"),  # Referenced SOP Instance UID in File
    0x00080012: ("X/D", "L"),  # Instance Creation Date
    0x00080013: ("X/Z/D", "L"),  # Instance Creation Time
    0x00080014: ("U", "U"),  # Instance Creator UID
    0x00080015: ("X", "L"),  # Instance Coercion DateTime
    0x00080017: ("U", "U"),  # Acquisition UID
    0x00080018: ("U", "U"),  # SOP Instance UID
    0x00080019: ("U", "U"),  # Pyramid UID
    0x00080020: ("Z", "L"),  # Study Date
    0x00080021: ("X/D", "L"),  # Series Date
    0x00080022: ("X/Z", "L"),  # Acquisition Date
    0x00080023: ("Z/D", "L"),  # Content Date
    0x00080024: ("X", "L"),  # Overlay Date
    0x00080025: ("X", "L"),  # Curve Date
    0x0008002A: ("X/Z/D", "L"),  # Acquisition DateTime
    0x00080030: ("Z", "L"),  # Study Time
    0x00080031: ("X/D", "L"),  # Series Time
    0x00080032: ("X/Z", "L"),  # Acquisition Time
    0x00080033: ("Z/D", "L"),  # Content Time
    0x00080034: ("X", "L"),  # Overlay Time
    0x00080035: ("X", "L"),  # Curve Time
    0x00080050: ("Z", ""),  # Accession Number
    0x00080054: ("X", ""),  # Retrieve AE Title
    0x00080055: ("X", ""),  # Station AE Title
    0x00080058: ("U", "U"),  # Failed SOP Instance UID List
    0x00080080: ("X/Z/D", ""),  # Institution Name
    0x00080081: ("X", ""),  # Institution Address
    0x00080082: ("X/Z/D", ""),  # Institution Code Sequence
    0x00080090: ("Z", ""),  # Referring Physician's Name
    0x00080092: ("X", ""),  # Referring Physician's Address
    0x00080094: ("X", ""),  # Referring Physician's Telephone Numbers
    0x00080096: ("X", ""),  # Referring Physician Identification Sequence
    0x0008009C: ("Z", ""),  # Consulting Physician's Name
    0x0008009D: ("X", ""),  # Consulting Physician Identification Sequence
    0x00080106: ("D", "L"),  # Context Group Version
    0x00080107: ("D", "L"),  # Context Group Local Version
    0x00080201: ("X", "L"),  # Timezone Offset From UTC
    0x00081000: ("X", ""),  # Network ID
    0x00081010: ("X/Z/D", ""),  # Station Name
    0x00081030: ("X", "C"),  # Study Description
    0x0008103E: ("X", "C"),  # Series Description
    0x00081040: ("X", ""),  # Institutional Department Name
    0x00081041: ("X", ""),  # Institutional Department Type Code Sequence
    0x00081048: ("X", ""),  # Physician(s) of Record
    0x00081049: ("X", ""),  # Physician(s) of Record Identification Sequence
    0x00081050: ("X", ""),  # Performing Physician's Name
    0x00081052: ("X", ""),  # Performing Physician Identification Sequence
    0x00081060: ("X", ""),  # Name of Physician(s) Reading Study
    0x00081062: ("X", ""),  # Physician(s) Reading Study Identification Sequence
    0x00081070: ("X/Z/D", ""),  # Operators' Name
    0x00081072: ("X/D", ""),  # Operator Identification Sequence
    0x00081080: ("X", "C"),  # Admitting Diagnoses Description
    0x00081084: ("X", "C"),  # Admitting Diagnoses Code Sequence
    0x00081088: ("X", "C"),  # Pyramid Description
    0x00081110: ("X/Z", "U"),  # Referenced Study Sequence
    0x00081111: ("X/Z/D", "U"),  # Referenced Performed Procedure Step Sequence
    0x00081120: ("X", "U"),  # Referenced Patient Sequence
    0x00081140: ("X/Z/U*", "U"),  # Referenced Image Sequence
    0x00081155: ("U", "U"),  # Referenced SOP Instance UID
    0x00081195: ("U", "U"),  # Transaction UID
    0x00082111: ("X", "C"),  # Derivation Description
    0x00082112: ("X/Z/U*", "U"),  # Source Image Sequence
    0x00083010: ("U", "U"),  # Irradiation Event UID
    0x00084000: ("X", "C"),  # Identifying Comments
    0x00100010: ("Z", ""),  # Patient's Name
    0x00100020: ("Z/D", ""),  # Patient ID
    0x00100021: ("X", ""),  # Issuer of Patient ID
    0x00100030: ("Z", ""),  # Patient's Birth Date
    0x00100032: ("X", ""),  # Patient's Birth Time
    0x00100040: ("Z", "P"),  # Patient's Sex
    0x00100050: ("X", ""),  # Patient's Insurance Plan Code Sequence
    0x00100101: ("X", ""),  # Patient's Primary Language Code Sequence
    0x00100102: ("X", ""),  # Patient's Primary Language Modifier Code Sequence
    0x00101000: ("X", ""),  # Other Patient IDs
    0x00101001: ("X", ""),  # Other Patient Names
    0x00101002: ("X", ""),  # Other Patient IDs Sequence
    0x00101005: ("X", ""),  # Patient's Birth Name
    0x00101010: ("X", "P"),  # Patient's Age
    0x00101020: ("X", "P"),  # Patient's Size
    0x00101030: ("X", "P"),  # Patient's Weight
    0x00101040: ("X", ""),  # Patient's Address
    0x00101050: ("X", ""),  # Insurance Plan Identification
    0x00101060: ("X", ""),  # Patient's Mother's Birth Name
    0x00101080: ("X", ""),  # Military Rank
    0x00101081: ("X", ""),  # Branch of Service
    0x00101090: ("X", ""),  # Medical Record Locator
    0x00101100: ("X", ""),  # Referenced Patient Photo Sequence
    0x00102000: ("X", "C"),  # Medical Alerts
    0x00102110: ("X", "C"),  # Allergies
    0x00102150: ("X", ""),  # Country of Residence
    0x00102152: ("X", ""),  # Region of Residence
    0x00102154: ("X", ""),  # Patient's Telephone Numbers
    0x00102155: ("X", ""),  # Patient's Telecom Information
    0x00102160: ("X", "P"),  # Ethnic Group
    0x00102180: ("X", "C"),  # Occupation
    0x001021A0: ("X", "P"),  # Smoking Status
    0x001021B0: ("X", "C"),  # Additional Patient History
    0x001021C0: ("X", "P"),  # Pregnancy Status
    0x001021D0: ("X", "L"),  # Last Menstrual Date
    0x001021F0: ("X", ""),  # Patient's Religious Preference
    0x00102203: ("X/Z", "P"),  # Patient's Sex Neutered
    0x00102297: ("X", ""),  # Responsible Person
    0x00102299: ("X", ""),  # Responsible Organization
    0x00104000: ("X", "C"),  # Patient Comments
    0x00120010: ("D", ""),  # Clinical Trial Sponsor Name
    0x00120020: ("D", ""),  # Clinical Trial Protocol ID
    0x00120021: ("Z", ""),  # Clinical Trial Protocol Name
    0x00120022: ("X", ""),  # Issuer of Clinical Trial Protocol ID
    0x00120023: ("X", ""),  # Other Clinical Trial Protocol IDs Sequence
    0x00120030: ("Z", ""),  # Clinical Trial Site ID
    0x00120031: ("Z", ""),  # Clinical Trial Site Name
    0x00120032: ("X", ""),  # Issuer of Clinical Trial Site ID
    0x00120040: ("D", ""),  # Clinical Trial Subject ID
    0x00120041: ("X", ""),  # Issuer of Clinical Trial Subject ID
    0x00120042: ("D", ""),  # Clinical Trial Subject Reading ID
    0x00120043: ("X", ""),  # Issuer of Clinical Trial Subject Reading ID
    0x00120050: ("Z", ""),  # Clinical Trial Time Point ID
    0x00120051: ("X", "C"),  # Clinical Trial Time Point Description
    0x00120055: ("X", ""),  # Issuer of Clinical Trial Time Point ID
    0x00120060: ("Z", ""),  # Clinical Trial Coordinating Center Name
    0x00120071: ("X", ""),  # Clinical Trial Series ID
    0x00120072: ("X", "C"),  # Clinical Trial Series Description
    0x00120073: ("X", ""),  # Issuer of Clinical Trial Series ID
    0x00120081: ("D", ""),  # Clinical Trial Protocol Ethics Committee Name
    0x00120082: ("X", ""),  # Clinical Trial Protocol Ethics Committee Approval Number
    0x00120086: ("X", "L"),  # Ethics Committee Approval Effectiveness Start Date
    0x00120087: ("X", "L"),  # Ethics Committee Approval Effectiveness End Date
    0x0014407C: ("X", "L"),  # Calibration Time
    0x0014407E: ("X", "L"),  # Calibration Date
    0x0016002B: ("X", "C"),  # Maker Note
    0x0016004B: ("X", "C"),  # Device Setting Description
    0x0016004D: ("X", ""),  # Camera Owner Name
    0x0016004E: ("X", ""),  # Lens Specification
    0x0016004F: ("X", ""),  # Lens Make
    0x00160050: ("X", ""),  # Lens Model
    0x00160051: ("X", ""),  # Lens Serial Number
    0x00160070: ("X", ""),  # GPS Version ID
    0x00160071: ("X", ""),  # GPS Latitude Ref
    0x00160072: ("X", ""),  # GPS Latitude
    0x00160073: ("X", ""),  # GPS Longitude Ref
    0x00160074: ("X", ""),  # GPS Longitude
    0x00160075: ("X", ""),  # GPS Altitude Ref
    0x00160076: ("X", ""),  # GPS Altitude
    0x00160077: ("X", ""),  # GPS Time Stamp
    0x00160078: ("X", ""),  # GPS Satellites
    0x00160079: ("X", ""),  # GPS Status
    0x0016007A: ("X", ""),  # GPS Measure Mode
    0x0016007B: ("X", ""),  # GPS DOP
    0x0016007C: ("X", ""),  # GPS Speed Ref
    0x0016007D: ("X", ""),  # GPS Speed
    0x0016007E: ("X", ""),  # GPS Track Ref
    0x0016007F: ("X", ""),  # GPS Track
    0x00160080: ("X", ""),  # GPS Img Direction Ref
    0x00160081: ("X", ""),  # GPS Img Direction
    0x00160082: ("X", ""),  # GPS Map Datum
    0x00160083: ("X", ""),  # GPS Dest Latitude Ref
    0x00160084: ("X", ""),  # GPS Dest Latitude
    0x00160085: ("X", ""),  # GPS Dest Longitude Ref
    0x00160086: ("X", ""),  # GPS Dest Longitude
    0x00160087: ("X", ""),  # GPS Dest Bearing Ref
    0x00160088: ("X", ""),  # GPS Dest Bearing
    0x00160089: ("X", ""),  # GPS Dest Distance Ref
    0x0016008A: ("X", ""),  # GPS Dest Distance
    0x0016008B: ("X", ""),  # GPS Processing Method
    0x0016008C: ("X", ""),  # GPS Area Information
    0x0016008D: ("X", "L"),  # GPS Date Stamp
    0x0016008E: ("X", ""),  # GPS Differential
    0x00180010: ("Z/D", "C"),  # Contrast/Bolus Agent
    0x00180027: ("X", "L"),  # Intervention Drug Stop Time
    0x00180035: ("X", "L"),  # Intervention Drug Start Time
    0x00181000: ("X/Z/D", ""),  # Device Serial Number
    0x00181002: ("U", "U"),  # Device UID
    0x00181004: ("X", ""),  # Plate ID
    0x00181005: ("X", ""),  # Generator ID
    0x00181007: ("X", ""),  # Cassette ID
    0x00181008: ("X", ""),  # Gantry ID
    0x00181009: ("X", ""),  # Unique Device Identifier
    0x0018100A: ("X", ""),  # UDI Sequence
    0x0018100B: ("U", "U"),  # Manufacturer's Device Class UID
    0x00181012: ("X", "L"),  # Date of Secondary Capture
    0x00181014: ("X", "L"),  # Time of Secondary Capture
    0x00181030: ("X/D", "C"),  # Protocol Name
    0x00181042: ("X", "L"),  # Contrast/Bolus Start Time
    0x00181043: ("X", "L"),  # Contrast/Bolus Stop Time
    0x00181072: ("X", "L"),  # Radiopharmaceutical Start Time
    0x00181073: ("X", "L"),  # Radiopharmaceutical Stop Time
    0x00181078: ("X", "L"),  # Radiopharmaceutical Start DateTime
    0x00181079: ("X", "L"),  # Radiopharmaceutical Stop DateTime
    0x001811BB: ("D", "C"),  # Acquisition Field Of View Label
    0x00181200: ("X", "L"),  # Date of Last Calibration
    0x00181201: ("X", "L"),  # Time of Last Calibration
    0x00181202: ("X", "L"),  # DateTime of Last Calibration
    0x00181203: ("Z", "L"),  # Calibration DateTime
    0x00181204: ("X", "L"),  # Date of Manufacture
    0x00181205: ("X", "L"),  # Date of Installation
    0x00181400: ("X/D", "C"),  # Acquisition Device Processing Description
    0x00182042: ("U", "U"),  # Target UID
    0x00184000: ("X", "C"),  # Acquisition Comments
    0x00185011: ("X", ""),  # Transducer Identification Sequence
    0x0018700A: ("X/D", ""),  # Detector ID
    0x0018700C: ("X/D", "L"),  # Date of Last Detector Calibration
    0x0018700E: ("X/D", "L"),  # Time of Last Detector Calibration
    0x00189074: ("D", "L"),  # Frame Acquisition DateTime
    0x00189151: ("D", "L"),  # Frame Reference DateTime
    0x00189185: ("X", "C"),  # Respiratory Motion Compensation Technique Description
    0x00189367: ("D", ""),  # X-Ray Source ID
    0x00189369: ("D", "L"),  # Source Start DateTime
    0x0018936A: ("D", "L"),  # Source End DateTime
    0x00189371: ("D", ""),  # X-Ray Detector ID
    0x00189373: ("X", ""),  # X-Ray Detector Label
    0x0018937B: ("X", "C"),  # Multi-energy Acquisition Description
    0x0018937F: ("X", "C"),  # Decomposition Description
    0x00189424: ("X", "C"),  # Acquisition Protocol Description
    0x00189516: ("X/D", "L"),  # Start Acquisition DateTime
    0x00189517: ("X/D", "L"),  # End Acquisition DateTime
    0x00189623: ("D", "L"),  # Functional Sync Pulse
    0x00189701: ("D", "L"),  # Decay Correction DateTime
    0x00189804: ("D", "L"),  # Exclusion Start DateTime
    0x00189919: ("Z/D", "L"),  # Instruction Performed DateTime
    0x00189937: ("X", "C"),  # Requested Series Description
    0x0018A002: ("X", "L"),  # Contribution DateTime
    0x0018A003: ("X", "C"),  # Contribution Description
    0x0020000D: ("U", "U"),  # Study Instance UID
    0x0020000E: ("U", "U"),  # Series Instance UID
    0x00200010: ("Z", ""),  # Study ID
    0x00200027: ("X", "C"),  # Pyramid Label
    0x00200052: ("U", "U"),  # Frame of Reference UID
    0x00200200: ("U", "U"),  # Synchronization Frame of Reference UID
    0x00203401: ("X", ""),  # Modifying Device ID
    0x00203403: ("X", "L"),  # Modified Image Date
    0x00203405: ("X", "L"),  # Modified Image Time
    0x00203406: ("X", ""),  # Modified Image Description
    0x00204000: ("X", "C"),  # Image Comments
    0x00209158: ("X", "C"),  # Frame Comments
    0x00209161: ("U", "U"),  # Concatenation UID
    0x00209164: ("U", "U"),  # Dimension Organization UID
    0x00281199: ("U", "U"),  # Palette Color Lookup Table UID
    0x00281214: ("U", "U"),  # Large Palette Color Lookup Table UID
    0x00284000: ("X", ""),  # Image Presentation Comments
    0x00320012: ("X", ""),  # Study ID Issuer
    0x00320032: ("X", "L"),  # Study Verified Date
    0x00320033: ("X", "L"),  # Study Verified Time
    0x00320034: ("X", "L"),  # Study Read Date
    0x00320035: ("X", "L"),  # Study Read Time
    0x00321000: ("X", "L"),  # Scheduled Study Start Date
    0x00321001: ("X", "L"),  # Scheduled Study Start Time
    0x00321010: ("X", "L"),  # Scheduled Study Stop Date
    0x00321011: ("X", "L"),  # Scheduled Study Stop Time
    0x00321020: ("X", ""),  # Scheduled Study Location
    0x00321021: ("X", ""),  # Scheduled Study Location AE Title
    0x00321030: ("X", "C"),  # Reason for Study
    0x00321032: ("X", ""),  # Requesting Physician
    0x00321033: ("X", ""),  # Requesting Service
    0x00321040: ("X", "L"),  # Study Arrival Date
    0x00321041: ("X", "L"),  # Study Arrival Time
    0x00321050: ("X", "L"),  # Study Completion Date
    0x00321051: ("X", "L"),  # Study Completion Time
    0x00321060: ("X/Z", "C"),  # Requested Procedure Description
    0x00321066: ("X", "C"),  # Reason for Visit
    0x00321067: ("X", "C"),  # Reason for Visit Code Sequence
    0x00321070: ("X", "C"),  # Requested Contrast Agent
    0x00324000: ("X", "C"),  # Study Comments
    0x00340001: ("D", ""),  # Flow Identifier Sequence
    0x00340002: ("D", ""),  # Flow Identifier
    0x00340005: ("D", ""),  # Source Identifier
    0x00340007: ("D", "L"),  # Frame Origin Timestamp
    0x00380004: ("X", ""),  # Referenced Patient Alias Sequence
    0x00380010: ("X", ""),  # Admission ID
    0x00380011: ("X", ""),  # Issuer of Admission ID
    0x00380014: ("X", ""),  # Issuer of Admission ID Sequence
    0x0038001A: ("X", "L"),  # Scheduled Admission Date
    0x0038001B: ("X", "L"),  # Scheduled Admission Time
    0x0038001C: ("X", "L"),  # Scheduled Discharge Date
    0x0038001D: ("X", "L"),  # Scheduled Discharge Time
    0x0038001E: ("X", ""),  # Scheduled Patient Institution Residence
    0x00380020: ("X", "L"),  # Admitting Date
    0x00380021: ("X", "L"),  # Admitting Time
    0x00380030: ("X", "L"),  # Discharge Date
    0x00380032: ("X", "L"),  # Discharge Time
    0x00380040: ("X", "C"),  # Discharge Diagnosis Description
    0x00380050: ("X", ""),  # Special Needs
    0x00380060: ("X", ""),  # Service Episode ID
    0x00380061: ("X", ""),  # Issuer of Service Episode ID
    0x00380062: ("X", "C"),  # Service Episode Description
    0x00380064: ("X", ""),  # Issuer of Service Episode ID Sequence
    0x00380300: ("X", ""),  # Current Patient Location
    0x00380400: ("X", ""),  # Patient's Institution Residence
    0x00380500: ("X", "C"),  # Patient State
    0x00384000: ("X", "C"),  # Visit Comments
    0x003A0310: ("U", "U"),  # Multiplex Group UID
    0x003A0314: ("D", "L"),  # Impedance Measurement DateTime
    0x003A0329: ("X", "C"),  # Waveform Filter Description
    0x003A032B: ("X", "C"),  # Filter Lookup Table Description
    0x00400001: ("X", ""),  # Scheduled Station AE Title
    0x00400002: ("X", "L"),  # Scheduled Procedure Step Start Date
    0x00400003: ("X", "L"),  # Scheduled Procedure Step Start Time
    0x00400004: ("X", "L"),  # Scheduled Procedure Step End Date
    0x00400005: ("X", "L"),  # Scheduled Procedure Step End Time
    0x00400006: ("X", ""),  # Scheduled Performing Physician's Name
    0x00400007: ("X", "C"),  # Scheduled Procedure Step Description
    0x00400009: ("X", ""),  # Scheduled Procedure Step ID
    0x0040000B: ("X", ""),  # Scheduled Performing Physician Identification Sequence
    0x00400010: ("X", ""),  # Scheduled Station Name
    0x00400011: ("X", ""),  # Scheduled Procedure Step Location
    0x00400012: ("X", ""),  # Pre-Medication
    0x00400241: ("X", ""),  # Performed Station AE Title
    0x00400242: ("X", ""),  # Performed Station Name
    0x00400243: ("X", ""),  # Performed Location
    0x00400244: ("X", "L"),  # Performed Procedure Step Start Date
    0x00400245: ("X", "L"),  # Performed Procedure Step Start Time
    0x00400250: ("X", "L"),  # Performed Procedure Step End Date
    0x00400251: ("X", "L"),  # Performed Procedure Step End Time
    0x00400253: ("X", ""),  # Performed Procedure Step ID
    0x00400254: ("X", "C"),  # Performed Procedure Step Description
    0x00400275: ("X", "C"),  # Request Attributes Sequence
    0x00400280: ("X", "C"),  # Comments on the Performed Procedure Step
    0x00400310: ("X", "C"),  # Comments on Radiation Dose
    0x0040050A: ("X", ""),  # Specimen Accession Number
    0x00400512: ("D", ""),  # Container Identifier
    0x00400513: ("Z", ""),  # Issuer of the Container Identifier Sequence
    0x0040051A: ("X", "C"),  # Container Description
    0x00400551: ("D", ""),  # Specimen Identifier
    0x00400554: ("U", "U"),  # Specimen UID
    0x00400555: ("X/Z", ""),  # Acquisition Context Sequence
    0x00400562: ("Z", ""),  # Issuer of the Specimen Identifier Sequence
    0x00400600: ("X", "C"),  # Specimen Short Description
    0x00400602: ("X", "C"),  # Specimen Detailed Description
    0x00400610: ("Z", ""),  # Specimen Preparation Sequence
    0x004006FA: ("X", ""),  # Slide Identifier
    0x00401001: ("X", ""),  # Requested Procedure ID
    0x00401002: ("X", "C"),  # Reason for the Requested Procedure
    0x00401004: ("X", ""),  # Patient Transport Arrangements
    0x00401005: ("X", ""),  # Requested Procedure Location
    0x0040100A: ("X", "C"),  # Reason for Requested Procedure Code Sequence
    0x00401010: ("X", ""),  # Names of Intended Recipients of Results
    0x00401011: ("X", ""),  # Intended Recipients of Results Identification Sequence
    0x00401101: ("D", ""),  # Person Identification Code Sequence
    0x00401102: ("X", ""),  # Person's Address
    0x00401103: ("X", ""),  # Person's Telephone Numbers
    0x00401104: ("X", ""),  # Person's Telecom Information
    0x00401400: ("X", "C"),  # Requested Procedure Comments
    0x00402001: ("X", "C"),  # Reason for the Imaging Service Request
    0x00402004: ("X", "L"),  # Issue Date of Imaging Service Request
    0x00402005: ("X", "L"),  # Issue Time of Imaging Service Request
    0x00402008: ("X", ""),  # Order Entered By
    0x00402009: ("X", ""),  # Order Enterer's Location
    0x00402010: ("X", ""),  # Order Callback Phone Number
    0x00402011: ("X", ""),  # Order Callback Telecom Information
    0x00402016: ("Z", ""),  # Placer Order Number / Imaging Service Request
    0x00402017: ("Z", ""),  # Filler Order Number / Imaging Service Request
    0x00402400: ("X", "C"),  # Imaging Service Request Comments
    0x00403001: ("X", ""),  # Confidentiality Constraint on Patient Data Description
    0x00404005: ("X", "L"),  # Scheduled Procedure Step Start DateTime
    0x00404008: ("X", "L"),  # Scheduled Procedure Step Expiration DateTime
    0x00404010: ("X", "L"),  # Scheduled Procedure Step Modification DateTime
    0x00404011: ("X", "L"),  # Expected Completion DateTime
    0x00404023: ("U", "U"),  # Referenced General Purpose Scheduled Procedure Step Transaction UID
    0x00404025: ("X", ""),  # Scheduled Station Name Code Sequence
    0x00404027: ("X", ""),  # Scheduled Station Geographic Location Code Sequence
    0x00404028: ("X", ""),  # Performed Station Name Code Sequence
    0x00404030: ("X", ""),  # Performed Station Geographic Location Code Sequence
    0x00404034: ("X", ""),  # Scheduled Human Performers Sequence
    0x00404035: ("X", ""),  # Actual Human Performers Sequence
    0x00404036: ("X", ""),  # Human Performer's Organization
    0x00404037: ("X", ""),  # Human Performer's Name
    0x00404050: ("X", "L"),  # Performed Procedure Step Start DateTime
    0x00404051: ("X", "L"),  # Performed Procedure Step End DateTime
    0x00404052: ("X", "L"),  # Procedure Step Cancellation DateTime
    0x0040A023: ("X", "L"),  # Findings Group Recording Date (Trial)
    0x0040A024: ("X", "L"),  # Findings Group Recording Time (Trial)
    0x0040A027: ("D", ""),  # Verifying Organization
    0x0040A030: ("D", "L"),  # Verification DateTime
    0x0040A032: ("X/D", "L"),  # Observation DateTime
    0x0040A033: ("X", "L"),  # Observation Start DateTime
    0x0040A073: ("D", ""),  # Verifying Observer Sequence
    0x0040A075: ("D", ""),  # Verifying Observer Name
    0x0040A078: ("X", ""),  # Author Observer Sequence
    0x0040A07A: ("X", ""),  # Participant Sequence
    0x0040A07C: ("X", ""),  # Custodial Organization Sequence
    0x0040A082: ("Z", "L"),  # Participation DateTime
    0x0040A088: ("Z", ""),  # Verifying Observer Identification Code Sequence
    0x0040A110: ("X", "L"),  # Date of Document or Verbal Transaction (Trial)
    0x0040A112: ("X", "L"),  # Time of Document Creation or Verbal Transaction (Trial)
    0x0040A120: ("D", "L"),  # DateTime
    0x0040A121: ("D", "L"),  # Date
    0x0040A122: ("D", "L"),  # Time
    0x0040A123: ("D", ""),  # Person Name
    0x0040A124: ("U", ""),  # UID
    0x0040A13A: ("D", "L"),  # Referenced DateTime
    0x0040A171: ("U", "U"),  # Observation UID
    0x0040A172: ("U", "U"),  # Referenced Observation UID (Trial)
    0x0040A192: ("X", "L"),  # Observation Date (Trial)
    0x0040A193: ("X", "L"),  # Observation Time (Trial)
    0x0040A307: ("X", ""),  # Current Observer (Trial)
    0x0040A352: ("X", ""),  # Verbal Source (Trial)
    0x0040A353: ("X", ""),  # Address (Trial)
    0x0040A354: ("X", ""),  # Telephone Number (Trial)
    0x0040A358: ("X", ""),  # Verbal Source Identifier Code Sequence (Trial)
    0x0040A402: ("U", "U"),  # Observation Subject UID (Trial)
    0x0040A730: ("D", ""),  # Content Sequence
    0x0040DB06: ("X", "L"),  # Template Version
    0x0040DB07: ("X", "L"),  # Template Local Version
    0x0040DB0C: ("U", "U"),  # Template Extension Organization UID
    0x0040DB0D: ("U", "U"),  # Template Extension Creator UID
    0x0040E004: ("X", "L"),  # HL7 Document Effective Time
    0x00420011: ("D", ""),  # Encapsulated Document
    0x00440004: ("X", "L"),  # Approval Status DateTime
    0x0044000B: ("X", "L"),  # Product Expiration DateTime
    0x00440010: ("X", "L"),  # Substance Administration DateTime
    0x00440104: ("D", "L"),  # Assertion DateTime
    0x00440105: ("X", "L"),  # Assertion Expiration DateTime
    0x0050001B: ("X", ""),  # Container Component ID
    0x00500020: ("X", ""),  # Device Description
    0x00500021: ("X", "C"),  # Long Device Description
    0x00620021: ("U", "U"),  # Tracking UID
    0x00640003: ("U", "U"),  # Source Frame of Reference UID
    0x00686226: ("D", "L"),  # Effective DateTime
    0x00686270: ("D", "L"),  # Information Issue DateTime
    0x006A0003: ("D", "U"),  # Annotation Group UID
    0x006A0005: ("D", "C"),  # Annotation Group Label
    0x006A0006: ("X", "C"),  # Annotation Group Description
    0x00700001: ("D", ""),  # Graphic Annotation Sequence
    0x00700082: ("X", "L"),  # Presentation Creation Date
    0x00700083: ("X", "L"),  # Presentation Creation Time
    0x00700084: ("Z/D", ""),  # Content Creator's Name
    0x00700086: ("X", ""),  # Content Creator's Identification Code Sequence
    0x0070031A: ("U", "U"),  # Fiducial UID
    0x00701101: ("U", "U"),  # Presentation Display Collection UID
    0x00701102: ("U", "U"),  # Presentation Sequence Collection UID
    0x0072000A: ("D", "L"),  # Hanging Protocol Creation DateTime
    0x0072005E: ("D", ""),  # Selector AE Value
    0x0072005F: ("D", "P"),  # Selector AS Value
    0x00720061: ("D", "L"),  # Selector DA Value
    0x00720063: ("D", "L"),  # Selector DT Value
    0x00720065: ("D", ""),  # Selector OB Value
    0x00720066: ("D", "C"),  # Selector LO Value
    0x00720068: ("D", "C"),  # Selector LT Value
    0x0072006A: ("D", ""),  # Selector PN Value
    0x0072006B: ("D", "L"),  # Selector TM Value
    0x0072006C: ("D", "C"),  # Selector SH Value
    0x0072006D: ("D", ""),  # Selector UN Value
    0x0072006E: ("D", "C"),  # Selector ST Value
    0x00720070: ("D", "C"),  # Selector UT Value
    0x00720071: ("D", ""),  # Selector UR Value
    0x00741234: ("X", ""),  # Receiving AE
    0x00741236: ("X", ""),  # Requesting AE
    0x00880140: ("U", "U"),  # Storage Media File-set UID
    0x00880200: ("X", ""),  # Icon Image Sequence (see Note 11)
    0x00880904: ("X", ""),  # Topic Title
    0x00880906: ("X", ""),  # Topic Subject
    0x00880910: ("X", ""),  # Topic Author
    0x00880912: ("X", ""),  # Topic Keywords
    0x01000420: ("X", "L"),  # SOP Authorization DateTime
    0x04000100: ("U", ""),  # Digital Signature UID
    0x04000105: ("D", "L"),  # Digital Signature DateTime
    0x04000115: ("D", ""),  # Certificate of Signer
    0x04000310: ("X", "L"),  # Certified Timestamp
    0x04000402: ("X", ""),  # Referenced Digital Signature Sequence
    0x04000403: ("X", ""),  # Referenced SOP Instance MAC Sequence
    0x04000404: ("X", ""),  # MAC
    0x04000550: ("X", ""),  # Modified Attributes Sequence
    0x04000551: ("X", ""),  # Nonconforming Modified Attributes Sequence
    0x04000552: ("X", ""),  # Nonconforming Data Element Value
    0x04000561: ("X", ""),  # Original Attributes Sequence
    0x04000562: ("D", "L"),  # Attribute Modification DateTime
    0x04000563: ("D", ""),  # Modifying System
    0x04000564: ("Z", ""),  # Source of Previous Values
    0x04000565: ("D", "C"),  # Reason for the Attribute Modification
    0x04000600: ("X", ""),  # Instance Origin Status
    0x20300020: ("X", ""),  # Text String
    0x21000040: ("X", "L"),  # Creation Date
    0x21000050: ("X", "L"),  # Creation Time
    0x21000070: ("X", ""),  # Originator
    0x21000140: ("D", ""),  # Destination AE
    0x22000002: ("X/Z", "C"),  # Label Text
    0x22000005: ("X/Z", ""),  # Barcode Value
    0x30020121: ("X", "C"),  # Position Acquisition Template Name
    0x30020123: ("X", "C"),  # Position Acquisition Template Description
    0x30060002: ("D", "C"),  # Structure Set Label
    0x30060004: ("X", "C"),  # Structure Set Name
    0x30060006: ("X", "C"),  # Structure Set Description
    0x30060008: ("Z", "L"),  # Structure Set Date
    0x30060009: ("Z", "L"),  # Structure Set Time
    0x30060024: ("U", "U"),  # Referenced Frame of Reference UID
    0x30060026: ("Z", "C"),  # ROI Name
    0x30060028: ("X", "C"),  # ROI Description
    0x3006002D: ("X", "L"),  # ROI DateTime
    0x3006002E: ("X", "L"),  # ROI Observation DateTime
    0x30060038: ("X", "C"),  # ROI Generation Description
    0x3006004D: ("X", ""),  # ROI Creator Sequence
    0x3006004E: ("X", ""),  # ROI Interpreter Sequence
    0x30060085: ("X", "C"),  # ROI Observation Label
    0x30060088: ("X", "C"),  # ROI Observation Description
    0x300600A6: ("Z", ""),  # ROI Interpreter
    0x300600C2: ("U", "U"),  # Related Frame of Reference UID
    0x30080024: ("D", "L"),  # Treatment Control Point Date
    0x30080025: ("D", "L"),  # Treatment Control Point Time
    0x30080054: ("X/D", "L"),  # First Treatment Date
    0x30080056: ("X/D", "L"),  # Most Recent Treatment Date
    0x30080105: ("X/Z", ""),  # Source Serial Number
    0x30080162: ("D", "L"),  # Safe Position Exit Date
    0x30080164: ("D", "L"),  # Safe Position Exit Time
    0x30080166: ("D", "L"),  # Safe Position Return Date
    0x30080168: ("D", "L"),  # Safe Position Return Time
    0x30080250: ("X/D", "L"),  # Treatment Date
    0x30080251: ("X/D", "L"),  # Treatment Time
    0x300A0002: ("D", "C"),  # RT Plan Label
    0x300A0003: ("X", "C"),  # RT Plan Name
    0x300A0004: ("X", "C"),  # RT Plan Description
    0x300A0006: ("X/D", "L"),  # RT Plan Date
    0x300A0007: ("X/D", "L"),  # RT Plan Time
    0x300A000B: ("X", "C"),  # Treatment Sites
    0x300A000E: ("X", "C"),  # Prescription Description
    0x300A0013: ("U", "U"),  # Dose Reference UID
    0x300A0016: ("X", "C"),  # Dose Reference Description
    0x300A0072: ("X", "C"),  # Fraction Group Description
    0x300A0083: ("U", "U"),  # Referenced Dose Reference UID
    0x300A00B2: ("X/Z", ""),  # Treatment Machine Name
    0x300A00C3: ("X", "C"),  # Beam Description
    0x300A00DD: ("X", "C"),  # Bolus Description
    0x300A0196: ("X", "C"),  # Fixation Device Description
    0x300A01A6: ("X", "C"),  # Shielding Device Description
    0x300A01B2: ("X", "C"),  # Setup Technique Description
    0x300A0216: ("X", ""),  # Source Manufacturer
    0x300A022C: ("D", "L"),  # Source Strength Reference Date
    0x300A022E: ("D", "L"),  # Source Strength Reference Time
    0x300A02EB: ("X", "C"),  # Compensator Description
    0x300A0608: ("D", "C"),  # Treatment Position Group Label
    0x300A0609: ("U", "U"),  # Treatment Position Group UID
    0x300A0611: ("Z", ""),  # RT Accessory Holder Slot ID
    0x300A0615: ("Z", ""),  # RT Accessory Device Slot ID
    0x300A0619: ("D", "C"),  # Radiation Dose Identification Label
    0x300A0623: ("D", "C"),  # Radiation Dose In-Vivo Measurement Label
    0x300A062A: ("D", "C"),  # RT Tolerance Set Label
    0x300A0650: ("U", "U"),  # Patient Setup UID
    0x300A0676: ("X", "C"),  # Equipment Frame of Reference Description
    0x300A067C: ("D", "C"),  # Radiation Generation Mode Label
    0x300A067D: ("Z", "C"),  # Radiation Generation Mode Description
    0x300A0700: ("U", "U"),  # Treatment Session UID
    0x300A0734: ("D", "C"),  # Treatment Tolerance Violation Description
    0x300A0736: ("D", "L"),  # Treatment Tolerance Violation DateTime
    0x300A073A: ("D", "L"),  # Recorded RT Control Point DateTime
    0x300A0741: ("D", "L"),  # Interlock DateTime
    0x300A0742: ("D", "C"),  # Interlock Description
    0x300A0760: ("D", "L"),  # Override DateTime
    0x300A0783: ("D", "C"),  # Interlock Origin Description
    0x300A0785: ("U", "U"),  # Referenced Treatment Position Group UID
    0x300A078E: ("X", "C"),  # Patient Treatment Preparation Procedure Parameter Description
    0x300A0792: ("X", "C"),  # Patient Treatment Preparation Method Description
    0x300A0794: ("X", "C"),  # Patient Setup Photo Description
    0x300A079A: ("X", "C"),  # Displacement Reference Label
    0x300C0113: ("X", "C"),  # Reason for Omission Description
    0x300C0127: ("D", "L"),  # Beam Hold Transition DateTime
    0x300E0004: ("Z", "L"),  # Review Date
    0x300E0005: ("Z", "L"),  # Review Time
    0x300E0008: ("X/Z", ""),  # Reviewer Name
    0x30100006: ("U", "U"),  # Conceptual Volume UID
    0x3010000B: ("U", "U"),  # Referenced Conceptual Volume UID
    0x3010000F: ("Z", "C"),  # Conceptual Volume Combination Description
    0x30100013: ("U", "U"),  # Constituent Conceptual Volume UID
    0x30100015: ("U", "U"),  # Source Conceptual Volume UID
    0x30100017: ("Z", "C"),  # Conceptual Volume Description
    0x3010001B: ("Z", ""),  # Device Alternate Identifier
    0x3010002D: ("D", ""),  # Device Label
    0x30100031: ("U", "U"),  # Referenced Fiducials UID
    0x30100033: ("D", "C"),  # User Content Label
    0x30100034: ("D", "C"),  # User Content Long Label
    0x30100035: ("D", "C"),  # Entity Label
    0x30100036: ("X", "C"),  # Entity Name
    0x30100037: ("X", "C"),  # Entity Description
    0x30100038: ("D", "C"),  # Entity Long Label
    0x3010003B: ("U", "U"),  # RT Treatment Phase UID
    0x30100043: ("Z", ""),  # Manufacturer's Device Identifier
    0x3010004C: ("X/D", "L"),  # Intended Phase Start Date
    0x3010004D: ("X/D", "L"),  # Intended Phase End Date
    0x30100054: ("D", "C"),  # RT Prescription Label
    0x30100056: ("X/D", "C"),  # RT Treatment Approach Label
    0x3010005A: ("Z", "C"),  # RT Physician Intent Narrative
    0x3010005C: ("Z", "C"),  # Reason for Superseding
    0x30100061: ("X", "C"),  # Prior Treatment Dose Description
    0x3010006E: ("U", "U"),  # Dosimetric Objective UID
    0x3010006F: ("U", "U"),  # Referenced Dosimetric Objective UID
    0x30100077: ("X/D", "C"),  # Treatment Site
    0x3010007A: ("Z", "C"),  # Treatment Technique Notes
    0x3010007B: ("Z", "C"),  # Prescription Notes
    0x3010007F: ("Z", "C"),  # Fractionation Notes
    0x30100081: ("Z", "C"),  # Prescription Notes Sequence
    0x30100085: ("X", "L"),  # Intended Fraction Start Time
    0x40000010: ("X", ""),  # Arbitrary
    0x40004000: ("X", ""),  # Text Comments
    0x40080040: ("X", ""),  # Results ID
    0x40080042: ("X", ""),  # Results ID Issuer
    0x40080100: ("X", "L"),  # Interpretation Recorded Date
    0x40080101: ("X", "L"),  # Interpretation Recorded Time
    0x40080102: ("X", ""),  # Interpretation Recorder
    0x40080108: ("X", "L"),  # Interpretation Transcription Date
    0x40080109: ("X", "L"),  # Interpretation Transcription Time
    0x4008010A: ("X", ""),  # Interpretation Transcriber
    0x4008010B: ("X", "C"),  # Interpretation Text
    0x4008010C: ("X", ""),  # Interpretation Author
    0x40080111: ("X", ""),  # Interpretation Approver Sequence
    0x40080112: ("X", "L"),  # Interpretation Approval Date
    0x40080113: ("X", "L"),  # Interpretation Approval Time
    0x40080114: ("X", ""),  # Physician Approving Interpretation
    0x40080115: ("X", "C"),  # Interpretation Diagnosis Description
    0x40080118: ("X", ""),  # Results Distribution List Sequence
    0x40080119: ("X", ""),  # Distribution Name
    0x4008011A: ("X", ""),  # Distribution Address
    0x40080200: ("X", ""),  # Interpretation ID
    0x40080202: ("X", ""),  # Interpretation ID Issuer
    0x40080300: ("X", "C"),  # Impressions
    0x40084000: ("X", "C"),  # Results Comments
    0xFFFAFFFA: ("X", ""),  # Digital Signatures Sequence
    0xFFFCFFFC: ("X", ""),  # Data Set Trailing Padding
}
